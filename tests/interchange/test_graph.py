"""An imported model through the graph and the CLI: records, corpus and explanations come from
the files with no forward pass, the published explanations are simulated and scored beside the
published scores, compared and revised; lineage names the files; a bad file writes nothing; the
model exports back to the same bytes, and as a dataset that polars and `datasets` read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from autointerp.config.settings import load_settings
from autointerp.storage.delta import read_table, table_version
from autointerp.storage.hashing import content_hash
from autointerp.viewer.layer import LayerQuery
from autointerp.viewer.neuron import neuron_page
from autointerp.viewer.pages import Links, Site
from pipelines.cli import main
from tests.interchange.conftest import RECORDS_SECTION

IMPORTED = "imported:published"


def write_config(folder: Path, dataset: Path, model_dir: Path, *, weights: bool = True) -> Path:
    config = folder / "autointerp.toml"
    config.write_text(
        f"""
[autointerp]
default_model = "published"

[models.tiny]
path = "{model_dir}"
num_layers = 2
dtype = "float32"
device = "cpu"
batch_size = 8
context_length = 64

[models.published]
openai_dataset = "{dataset}"
num_layers = 2
neurons = 8
{'weights = "tiny"' if weights else ""}

{RECORDS_SECTION}
[revisions]
rounds = 1
neuron_sample = "first:3"

[summaries]
bootstrap_samples = 200
"""
    )
    return config


@pytest.fixture
def imported_env(tmp_path, published, tiny_model_dir, monkeypatch) -> Path:
    config = write_config(tmp_path, published, tiny_model_dir)
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("AUTOINTERP_ALLOW_HUB", raising=False)
    return tmp_path


def test_an_imported_model_runs_compares_revises_and_exports_back(
    imported_env, published, source, capsys, monkeypatch
):
    main(["run", "--layers", "0-1"])
    tables = imported_env / "home/delta/published"

    def table(name: str) -> pl.DataFrame:
        return read_table(str(tables / name))

    records = table("neuron_records").sort("layer", "neuron")
    kept = [c for c in source.records.columns if not c.endswith("excerpt_ids")]
    assert records.select(kept).equals(source.records.select(kept))
    corpus = table("corpus")
    assert corpus["excerpt_id"].n_unique() == corpus.height
    # Each layer's excerpts are a corpus of their own, which its records and scores name.
    layer_corpora = corpus.select("layer", "corpus_id").unique().sort("layer")
    assert layer_corpora.height == 2 and layer_corpora["corpus_id"].n_unique() == 2
    named = records.select("layer", "corpus_id").unique().sort("layer")
    assert named.equals(layer_corpora.cast(named.schema))
    # The published explanations are a profile of their own, beside the baseline explainer's;
    # no LLM was called for them.
    explanations = table("explanations")
    assert explanations.group_by("explainer").len().sort("explainer").rows() == [
        (IMPORTED, 16),
        ("token-statistics-baseline", 16),
    ]
    assert table("explainer_calls").is_empty()
    # Scored by the lexical simulator of this project, and by the dataset's own simulator: the
    # stored scores, exactly.
    scores = table("scores")
    pairs = scores.select("explainer", "simulator").unique().sort("explainer", "simulator")
    assert pairs.rows() == [
        (IMPORTED, IMPORTED),
        (IMPORTED, "lexical-baseline"),
        ("token-statistics-baseline", "lexical-baseline"),
    ]
    published_scores = scores.filter(pl.col("simulator") == IMPORTED).sort("layer", "neuron")
    stored = source.scores.filter(
        (pl.col("split") == "test") & (pl.col("scored_on") == "top_and_random")
    )
    values = ["layer", "neuron", "ev_correlation", "rsquared", "absolute_dev_explained"]
    assert published_scores.select(values).equals(stored.select(values))
    summary = table("score_summary").select("explainer", "simulator").unique()
    assert summary.sort("explainer", "simulator").rows() == pairs.rows()
    # Compared with the baseline explainer, and revised by the baseline reviser, whose
    # counterexample texts ran through the declared weights.
    compare = table("compare")
    assert set(compare["explainer_a"]) | set(compare["explainer_b"]) == {
        IMPORTED,
        "token-statistics-baseline",
    }
    revised = table("revised_explanations_r1")
    assert set(revised["explainer"]) == {IMPORTED} and revised.height == 6
    counter = table("counterexamples_r1").filter(pl.col("source") == "generated")
    assert counter["true_activations"].drop_nulls().len() > 0

    # The viewer shows the imported excerpts' tokens, from the layer's corpus, and the published
    # scores beside this project's.
    site = Site(load_settings())
    overview = site.overview("published", Links())
    assert f"{IMPORTED} → {IMPORTED}" in overview and f"{IMPORTED} → lexical-baseline" in overview
    assert site.layer("published", 1, LayerQuery(), Links()) and site.neuron(
        "published", 1, 3, Links()
    )
    page = neuron_page(site.model("published")[1], 1, 3)
    assert {(g.explainer, g.simulator) for g in page.groups if g.samples[0].chosen} == {
        (IMPORTED, IMPORTED),
        (IMPORTED, "lexical-baseline"),
        ("token-statistics-baseline", "lexical-baseline"),
    }
    tokens = dict(source.corpus.select("excerpt_id", "tokens").iter_rows())
    record = source.records.filter((pl.col("layer") == 1) & (pl.col("neuron") == 3)).row(
        0, named=True
    )
    assert [e.tokens for e in page.top] == [tokens[i] for i in record["top_excerpt_ids"]]

    capsys.readouterr()
    main(["lineage", "--layer", "1", "--neuron", "3", "--explainer", IMPORTED])
    out = capsys.readouterr().out
    assert f"imported from: {published / 'collated-activations/1/3.json'}, " in out
    assert str(published / "explanations/1/3.jsonl") in out

    # Exported back, the files are the ones imported, byte for byte.
    again = imported_env / "again"
    main(["export", "openai", "--out", str(again)])
    main(["export", "openai", "--out", str(imported_env / "x"), "--simulator", IMPORTED])
    for file in sorted((published / "collated-activations").rglob("*.json")):
        assert file.read_bytes() == (again / file.relative_to(published)).read_bytes()
    for file in sorted((published / "explanations").rglob("*.jsonl")):
        path = file.relative_to(published)
        assert file.read_bytes() == (imported_env / "x" / path).read_bytes()
    assert '"explainer": "imported:published"' in (again / "autointerp-export.json").read_text()

    shared = imported_env / "shared"
    main(["export", "dataset", "--out", str(shared)])
    card = (shared / "README.md").read_text()
    assert "license: other\nconfigs:\n" in card and "- config_name: corpus\n" in card
    assert f"imported from the published dataset {published}; 2 layers" in card
    assert "  - unknown: " in card  # the corpus's licences, counted
    metadata = json.loads((shared / "autointerp.json").read_text())
    for exported in metadata["tables"]:
        assert exported["version"] == table_version(str(tables / exported["name"]))
        runs = ", ".join(exported["run_ids"])
        assert runs and f"| {exported['name']} | {exported['rows']:,} | " in card
        assert f" | {exported['version']} | {runs} |" in card
    profiles = {(p["role"], p["name"]): p for p in metadata["profiles"]}
    assert set(profiles) >= {("explainer", IMPORTED), ("simulator", IMPORTED)}
    for info in profiles.values():  # the settings listed are what the hash covers
        assert content_hash(info["role"], info["settings"]) == info["hash"]
        assert f"| {info['role']} | {info['name']} | `{info['hash']}` | " in card
    assert profiles[("explainer", IMPORTED)]["settings"]["source"] == str(published)
    assert "## How the scores were computed" in card
    assert pl.read_parquet(shared / "scores/*.parquet").height == scores.height
    # `datasets` reads the files, and the card's configurations, offline.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    cache = str(imported_env / "hf-cache")
    loaded = datasets.load_dataset(
        "parquet", data_files=str(shared / "scores/*.parquet"), split="train", cache_dir=cache
    )
    assert loaded.num_rows == scores.height and set(loaded.column_names) == set(scores.columns)
    nested = datasets.load_dataset(str(shared), "neuron_records", split="train", cache_dir=cache)
    assert nested.num_rows == 16 and len(nested[0]["top_activations"]) == 8


def test_a_bad_file_fails_the_import_and_writes_nothing(
    tmp_path, published, tiny_model_dir, monkeypatch
):
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    bad = broken / "collated-activations/1/6.json"
    bad.write_text(bad.read_text().replace('"ActivationRecord"', '"ActivationRecords"', 1))
    config = write_config(tmp_path, broken, tiny_model_dir, weights=False)
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(SystemExit) as failed:
        main(["run", "--layers", "0-1"])
    message = str(failed.value)  # one line, naming the file and what is wrong in it
    assert str(bad) in message and "'ActivationRecords'" in message and "\n" not in message
    root = load_settings().model_root(load_settings().model("published"))
    for name in ("corpus", "neuron_records", "imported_explanations", "explanations"):
        assert table_version(f"{root}/{name}") is None
