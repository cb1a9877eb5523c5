"""The `autointerp` command end to end on a tiny model, and its clear errors for bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from autointerp.config.settings import load_settings
from autointerp.storage import delta
from autointerp.storage.delta import commit_history, read_table
from pipelines.cli import main, parse_layers
from pipelines.refresh import contiguous
from pipelines.run_plan import layer_runs
from pipelines.runs import Materializer, failed_rows
from resources import subject_models
from tests.conftest import write_config, write_text_corpus


def files_of(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def test_run_materializes_into_the_shared_instance(tiny_env, capsys, monkeypatch):
    models_held = {}  # table -> models loaded while it was written
    write = delta.write_partitions

    def counting_write(uri, frame, **options):
        models_held[uri.rsplit("/", 1)[-1]] = subject_models._load.cache_info().currsize
        return write(uri, frame, **options)

    monkeypatch.setattr(delta, "write_partitions", counting_write)
    main(["run", "--layers", "0-1", "--excerpts", "60"])
    out = capsys.readouterr().out
    assert "neuron records per layer" in out and "explanation scores per layer" in out
    home = tiny_env / "home"
    records = read_table(str(home / "delta/tiny/neuron_records"))
    assert sorted(records["layer"].unique()) == [0, 1] and records.height == 2 * 64
    # Both layers came from one run (one forward pass served both), a commit per layer.
    writes = [
        c
        for c in commit_history(str(home / "delta/tiny/neuron_records"))
        if c.get("operation") != "CREATE TABLE"
    ]
    assert len(writes) == 2 and len({c["dagster_run_id"] for c in writes}) == 1
    corpus = read_table(str(home / "delta/tiny/corpus"))
    assert corpus.height == 60 and corpus["token_ids"].list.len().unique().to_list() == [16]
    splits = read_table(str(home / "delta/tiny/top_k_excerpts"))
    assert set(splits["split"]) == {"train", "calibration", "valid", "test"}
    # The offline baselines explained and scored every neuron of both layers.
    explanations = read_table(str(home / "delta/tiny/explanations"))
    assert explanations.height == 128 and explanations["error"].null_count() == 128
    assert set(explanations["explainer"]) == {"token-statistics-baseline"}
    scores = read_table(str(home / "delta/tiny/scores"))
    assert set(scores["scored_on"]) == {"top", "random", "top_and_random"}
    summary = read_table(str(home / "delta/tiny/score_summary"))
    assert sorted(summary["layer"]) == [0, 1] and (summary["neurons"] == 64).all()
    assert (summary["dropped"] == 0).all()  # every explained neuron is in the summary
    # The runs are in the Dagster instance under AUTOINTERP_HOME, which the UI reads too.
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        # The corpus; the capture of layers 0-1 (one pass); each layer's other steps; summaries.
        assert len(runs) == 5
        # Runs of the code location's job, tagged, so the UI can show and re-execute them.
        assert {run.job_name for run in runs} == {"tiny_graph"}
        assert {run.tags.get("autointerp/layers") for run in runs} == {None, "0-1", "0", "1"}
        assert {run.tags["autointerp/command"] for run in runs} == {"run"}
        # Each layer's materialization carries its own metadata, the write's shared.
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(["tiny", "scores"]), asset_partitions=["1"]), 1
        ).records
        metadata = record.asset_materialization.metadata
        assert metadata["dagster/row_count"].value == 64 * 3 * 3  # neurons x splits x kinds
        assert -1 <= metadata["mean"].value <= 1 and metadata["neurons"].value == 64
        assert (
            metadata["top_neurons"]
            .value.records[0]
            .data["lineage"]
            .startswith("autointerp lineage --model tiny --layer 1 --neuron ")
        )
        assert "data:image/svg+xml;base64," in metadata["score_histogram"].value
        columns = [c.name for c in metadata["dagster/column_schema"].value.columns]
        assert "ev_correlation" in columns and "dagster_run_id" in columns
        assert metadata["table_uri"].value == str(home / "delta/tiny/scores")
    # The model is held neither while the records are written (several times their size at
    # the peak) nor once the runs that loaded it are done.
    assert models_held["neuron_records"] == 0
    assert subject_models._load.cache_info().currsize == 0

    # A later run of one layer leaves the other's files byte-identical.
    layer0 = files_of(home / "delta/tiny/neuron_records/layer=0")
    main(["run", "--layers", "1", "--excerpts", "60"])
    assert files_of(home / "delta/tiny/neuron_records/layer=0") == layer0


def test_layer_parsing():
    settings = load_settings(
        write_config(Path("/tmp/unused.toml"), Path("/m"), Path("/c"), num_layers=30)
    )
    model = settings.model("tiny")
    assert parse_layers("0,5,29", model) == [0, 5, 29]
    assert parse_layers("3-5,1", model) == [1, 3, 4, 5]
    assert parse_layers(None, model) == list(range(30))
    order = [str(layer) for layer in range(30)]
    assert contiguous(["0", "1", "2", "7", "9", "10"], order) == [
        ("0", "2"),
        ("7", "7"),
        ("9", "10"),
    ]


def test_a_range_of_layers_runs_one_layer_per_run_but_the_capture():
    """Memory stays flat in the layers: a run holds one layer's rows, but for the capture, whose
    one forward pass serves every layer of the range and keeps only the records."""
    order = [str(layer) for layer in range(30)]
    names = ["neuron_records", "top_k_excerpts", "explanations", "scores"]
    runs = layer_runs(names, ("3", "5"), order)
    assert runs == [
        (["neuron_records"], ("3", "5")),
        (["top_k_excerpts", "explanations", "scores"], ("3", "3")),
        (["top_k_excerpts", "explanations", "scores"], ("4", "4")),
        (["top_k_excerpts", "explanations", "scores"], ("5", "5")),
    ]
    assert layer_runs(["scores"], ("0", "29"), order) == [
        (["scores"], (layer, layer)) for layer in order
    ]
    # An imported model's import is one run over the range: a bad file of one layer writes none.
    imported = ["corpus", "imported_explanations", "neuron_records", "scores"]
    assert layer_runs(imported, ("3", "4"), order)[0] == (imported[:3], ("3", "4"))
    # Shards are one pass each over the range; their merge reads one layer at a time.
    sharded = ["neuron_records_shard_0", "neuron_records_shard_1", "neuron_records", "scores"]
    assert layer_runs(sharded, ("3", "4"), order) == [
        (sharded[:2], ("3", "4")),
        (["neuron_records", "scores"], ("3", "3")),
        (["neuron_records", "scores"], ("4", "4")),
    ]


def test_a_deep_range_is_captured_in_runs_of_a_few_layers():
    """Memory stays flat in the depth of the range too: a capture run holds the records of
    `capture_layers_per_run` layers. The corpus comes with the first; an import stays whole."""
    order = [str(layer) for layer in range(30)]
    names = ["corpus", "neuron_records", "scores"]
    runs = layer_runs(names, ("2", "14"), order, 6)
    assert runs[:3] == [
        (["corpus", "neuron_records"], ("2", "7")),
        (["neuron_records"], ("8", "13")),
        (["neuron_records"], ("14", "14")),
    ]
    assert runs[3:] == [(["scores"], (layer, layer)) for layer in order[2:15]]
    assert layer_runs(names[:2], ("0", "5"), order, 6) == [(names[:2], ("0", "5"))]
    assert layer_runs(names[:2], ("0", "5"), order, 0) == [(names[:2], ("0", "5"))]
    assert layer_runs(["corpus"], ("0", "29"), order, 6) == [(["corpus"], ("0", "5"))]
    sharded = ["neuron_records_shard_0", "neuron_records_shard_1", "neuron_records"]
    assert layer_runs(sharded, ("0", "3"), order, 2)[:2] == [
        (sharded[:2], ("0", "1")),
        (sharded[:2], ("2", "3")),
    ]
    imported = ["corpus", "imported_explanations", "neuron_records"]
    assert layer_runs(imported, ("0", "29"), order, 6) == [(imported, ("0", "29"))]


def test_a_capture_in_runs_of_one_layer_writes_the_records_of_one_pass(
    tmp_path, tiny_model_dir, monkeypatch
):
    """The first run leaves the residual stream after its layer, and the second starts from it
    (`autointerp.activations.residuals`): the same records as one pass over the range."""
    corpus = write_text_corpus(tmp_path / "corpus")
    tables, runs = {}, {}
    for per_run in (0, 1):
        extra = f"[execution]\ncapture_layers_per_run = {per_run}\n"
        config = write_config(tmp_path / f"{per_run}.toml", tiny_model_dir, corpus, extra=extra)
        settings = load_settings(config, tmp_path / f"home{per_run}")
        instance = dg.DagsterInstance.ephemeral()
        materialize = Materializer(settings, settings.model("tiny"), "run", instance=instance)
        materialize([materialize.key("corpus"), materialize.key("neuron_records")], ("0", "1"))
        runs[per_run] = [
            event.message
            for run in reversed(instance.get_runs())
            for event in instance.all_logs(run.run_id)
            if "capturing layers" in event.message
        ]
        tables[per_run] = read_table(str(settings.home / "delta" / "tiny" / "neuron_records"))
    assert len(runs[0]) == 1 and "hidden states" not in runs[0][0]
    first, second = runs[1]
    assert "[0]" in first and "hidden states" not in first
    assert "[1]" in second and "from the hidden states in" in second
    residuals = tmp_path / "home1" / "residuals" / "tiny"
    assert residuals.is_dir() and not any(residuals.iterdir())  # read through, then removed
    lineage = r"^(.*run_id|.*_version)$"
    one_pass, in_runs = (
        tables[k].select(pl.exclude(lineage)).sort("layer", "neuron") for k in (0, 1)
    )
    assert one_pass.height == 2 * 64 and in_runs.equals(one_pass)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--model", "nope"], "unknown model 'nope'; models declared in the config: "),
        (["run", "--layers", "2"], "out of range: tiny has layers 0-1"),
        (["run", "--layers", "x"], "expected e.g. '0,5,29'"),
        (["run", "--excerpts", "0"], "--excerpts must be at least 1"),
        (["run", "--layers", "1-0"], "the range 1-0 is empty (write 0-1)"),
        (["run", "--model", "hub-only", "--layers", "0"], "AUTOINTERP_ALLOW_HUB"),
    ],
)
def test_bad_requests_fail_clearly(tiny_env, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert message in str(exit_info.value)


def _run_error(argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return str(exit_info.value)


def test_corpus_problems_fail_clearly(tiny_env, tiny_model_dir):
    empty = tiny_env / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    write_config(tiny_env / "autointerp.toml", tiny_model_dir, empty)
    assert "no text" in _run_error(["run", "--layers", "0"]).lower()

    short = tiny_env / "short"
    short.mkdir()
    (short / "a.txt").write_text("the king and the queen")
    write_config(tiny_env / "autointerp.toml", tiny_model_dir, short)
    assert "tokens" in _run_error(["run", "--layers", "0"])

    long_excerpts = write_text_corpus(tiny_env / "corpus")
    write_config(tiny_env / "autointerp.toml", tiny_model_dir, long_excerpts)
    config = (
        (tiny_env / "autointerp.toml")
        .read_text()
        .replace("excerpt_tokens = 16", "excerpt_tokens = 65")
    )
    (tiny_env / "autointerp.toml").write_text(config)
    assert "65" in _run_error(["run", "--layers", "0"])


def test_unusable_home_fails_clearly(tiny_env, monkeypatch):
    blocker = tiny_env / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("AUTOINTERP_HOME", str(blocker))
    assert "is not a folder" in _run_error(["run"])
    monkeypatch.setenv("AUTOINTERP_HOME", str(blocker / "below-a-file"))
    assert "not writable" in _run_error(["run"])


def test_corrupt_table_fails_clearly(tiny_env):
    main(["run", "--layers", "0", "--excerpts", "40"])
    log = tiny_env / "home/delta/tiny/corpus/_delta_log"
    for entry in log.glob("*.json"):
        entry.write_text("{ not json")
    assert "corrupt" in _run_error(["run", "--layers", "0", "--excerpts", "40"])


def test_corpora_live_side_by_side_and_the_same_corpus_again_writes_nothing(tiny_env, capsys):
    home = tiny_env / "home"
    main(["run", "--layers", "0", "--excerpts", "60"])
    main(["run", "--layers", "1", "--excerpts", "40"])
    corpus = str(home / "delta/tiny/corpus")
    table = read_table(corpus)
    sizes = dict(table.group_by("corpus_id").len().iter_rows())
    assert sorted(sizes.values()) == [40, 60]  # both corpora kept, each under its identity
    # Every row downstream names the corpus it came from.
    scores = read_table(str(home / "delta/tiny/scores"))
    by_layer = dict(scores.select("layer", "corpus_id").unique().iter_rows())
    assert sizes[by_layer[0]] == 60 and sizes[by_layer[1]] == 40
    # Layer 0's lineage still reads its excerpts' text from its own corpus.
    capsys.readouterr()
    main(["lineage", "--layer", "0", "--neuron", "3"])
    lineage = capsys.readouterr().out
    assert "not in the corpus table" not in lineage
    assert "Neuron viewer: http://127.0.0.1:8765/m/tiny/l/0/n/3" in lineage
    # The same corpus again: nothing is written.
    version = commit_history(corpus)[0]["version"]
    main(["run", "--layers", "1", "--excerpts", "40"])
    assert commit_history(corpus)[0]["version"] == version


def test_a_run_whose_rows_failed_ends_with_a_warning_per_table():
    lines = failed_rows({"explanations": 0, "simulations": 12}, " layers 0-1")
    assert lines == [
        "autointerp: warning: 12 rows of simulations layers 0-1 failed (their error column says "
        "why; score_summary's dropped and dropped_why count the neurons left out)"
    ]
