"""The tiny study end to end through `autointerp study`: it trains both models as Dagster assets,
deterministically, each beating the unigram baseline; each becomes a subject model whose graph
is explained and scored; and the models are compared, with intervals, in an asset and from the
command line."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import safetensors.torch

from assets import model_assets
from assets.study import study_assets
from autointerp.activations.corpus_sources import iter_documents
from autointerp.config.settings import Settings, load_settings
from autointerp.storage.delta import read_table
from autointerp.study.data import split_windows
from autointerp.study.tokenizer import train_byte_level_bpe
from autointerp.study.training import train_model
from autointerp.table_checks import short_of_unigram
from autointerp.viewer.pages import Links, Site
from pipelines.cli import main, training_due
from pipelines.location import resources
from pipelines.refresh import plan_refresh
from pipelines.runs import COMMAND_TAG, STUDY_JOB, Materializer
from tests.conftest import write_text_corpus
from tests.study.conftest import TINY_STUDY

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dir, one_thread) -> tuple[Settings, str]:
    """`autointerp study` run once on a tiny configuration: its settings and what it printed."""
    root = tmp_path_factory.mktemp("study")
    corpus = write_text_corpus(root / "corpus")
    config = root / "autointerp.toml"
    config.write_text(
        f"""
[autointerp]
default_model = "study-relu"

[models.unscored]
path = "{tiny_model_dir}"
num_layers = 2

[corpus]
source = "text:{corpus}"
excerpt_tokens = 16

[records]
top_k = 8
random_k = 6
quantile_k = 2
boundary_pool = 32
{TINY_STUDY}
"""
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOINTERP_CONFIG", str(config))
        patch.setenv("AUTOINTERP_HOME", str(root / "home"))
        patch.setenv("DAGSTER_HOME", str(root / "home" / "dagster"))
        patch.delenv("AUTOINTERP_ALLOW_HUB", raising=False)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main(["study"])
        yield load_settings(), printed.getvalue()


def table(settings: Settings, *path: str):
    return read_table("/".join([settings.delta_root, *path]))


def test_each_model_trains_beats_unigram_and_becomes_a_subject_model(study):
    settings, printed = study
    trained = table(settings, "study", "training_summary").sort("model")
    assert trained["model"].to_list() == ["study-relu", "study-solu"]
    assert (trained["heldout_loss"] < trained["unigram_loss"] - 0.5).all()
    assert trained["parameters"].max() <= trained["parameters"].min() * 1.02
    assert (trained["tokens"] == 200 * 8 * 32).all() and trained["unigram_loss"].n_unique() == 1
    assert [len(curve) for curve in trained["curve"]] == [4, 4]
    for curve in trained["curve"]:
        assert curve[-1]["heldout_loss"] < curve[0]["heldout_loss"]
    # The unigram check fails a model short of its margin (here, any model).
    assert short_of_unigram(trained, 0.5) == [] and len(short_of_unigram(trained, 5.0)) == 2
    assert "study models" in printed and "study-solu" in printed and "margin" in printed
    for name in ("study-relu", "study-solu"):
        model = settings.model(name)
        assert (Path(model.path) / "model.safetensors").is_file()
        scores = read_table(settings.table_uri(model, "scores"))
        assert sorted(scores["layer"].unique()) == [0, 1]
        corpus = read_table(settings.table_uri(model, "corpus"))
        assert corpus.height == 200  # explain_excerpts
    assert (settings.home / "study" / "loss_curves.png").read_bytes().startswith(PNG)


def test_training_is_deterministic_given_the_seed(study):
    settings, _ = study
    spec = settings.study
    texts = [
        d.text
        for d in iter_documents(settings.corpus, downloads=settings.downloads, allow_hub=False)
    ]
    tokenizer = train_byte_level_bpe(texts, spec.vocab_size)
    saved = (spec.folder(settings.home) / "tokenizer" / "tokenizer.json").read_text()
    assert (
        tokenizer.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.from_str(saved).to_str()
    )
    train, heldout = split_windows(table(settings, "study", "training_data"))
    again = train_model("solu", spec, train, heldout, len(tokenizer))
    weights = safetensors.torch.load_file(
        str(spec.model_folder(settings.home, "solu") / "model.safetensors")
    )
    retrained = again.model.state_dict()
    assert weights.keys() <= retrained.keys()
    for name, tensor in weights.items():
        assert tensor.equal(retrained[name]), name
    row = table(settings, "study", "model_solu").row(0, named=True)
    assert row["heldout_loss"] == again.heldout_loss


def test_the_models_are_compared_with_intervals(study):
    settings, printed = study
    comparison = table(settings, "comparison", "across_models")
    assert comparison.select("model", "depth").rows() == [
        (model, depth)
        for model in ("study-relu", "study-solu")
        for depth in ("all", "0.25-0.50", "0.75-1.00")
    ]
    reference = comparison.filter(comparison["model"] == "study-relu")
    other = comparison.filter(comparison["model"] == "study-solu")
    assert reference["diff"].null_count() == 3
    assert ((other["ci_low"] <= other["diff"]) & (other["diff"] <= other["ci_high"])).all()
    assert (comparison["neurons"] == [128, 64, 64] * 2).all()
    assert comparison["floor_mean"].is_not_null().all()  # the chance floor beside every score
    assert (comparison["floor_mean"] < comparison["mean"]).all()
    assert "reference" in printed and "bootstrap 95% interval" in printed
    assert (settings.home / "comparison" / "across_models.png").read_bytes().startswith(PNG)


def test_the_viewer_s_overview_shows_the_comparison(study):
    settings, _ = study
    page = Site(settings).index(Links())
    compared = page[page.index('id="compared"') :]
    comparison = table(settings, "comparison", "across_models")
    solu = comparison.filter(model="study-solu", depth="all").row(0, named=True)
    interval = f"{solu['diff']:+.3f} [{solu['ci_low']:+.3f}, {solu['ci_high']:+.3f}]"
    assert "minus study-relu's" in compared and interval in compared
    assert "dead" in compared and "floor" in compared
    spec = json.loads(re.search(r'id="model-differences"[^>]*>(.*?)</script>', compared, re.S)[1])
    plotted = spec["datasets"]["rows"]
    assert {(r["model"], r["depth"]) for r in plotted} == {
        ("study-solu", depth) for depth in ("all", "0.25-0.50", "0.75-1.00")
    }


def test_a_second_study_run_retrains_only_what_changed(study):
    settings, _ = study
    assert training_due(settings, Materializer(settings, None, "study")) == []
    # The graphs were run against the trained weights: nothing the study ran is out of date.
    graph = Materializer(settings, settings.model("study-relu"), "study")
    due = plan_refresh(graph.instance, graph.assets).due
    for name in ("corpus", "neuron_records", "scores", "score_summary"):
        assert graph.key(name) not in due, name
    longer = replace(settings, study=replace(settings.study, steps=300))
    due = training_due(longer, Materializer(longer, None, "study"))
    assert [key.path[-1] for key in due] == ["model_relu", "model_solu", "training_summary"]


def test_study_runs_are_runs_of_the_code_location_s_jobs(study):
    # The fixture's DAGSTER_HOME: the instance its `autointerp study` ran in.
    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(dg.RunsFilter(tags={COMMAND_TAG: "study"}))
    jobs = {run.job_name for run in runs}
    assert jobs == {STUDY_JOB, "study_relu_graph", "study_solu_graph"}
    trained = [run for run in runs if run.job_name == STUDY_JOB]
    assert {key.path[-1] for run in trained for key in run.asset_selection} >= {
        "training_data",
        "model_relu",
        "across_models",
    }


def test_compare_sets_any_declared_models_side_by_side(study, capsys):
    settings, _ = study
    main(["compare", "--models", "study-solu,study-relu"])
    out = capsys.readouterr().out
    assert "minus study-solu's" in out and "[" in out
    assert (settings.home / "comparison" / "study_solu-vs-study_relu.png").is_file()
    with pytest.raises(SystemExit, match="unscored has no scores table"):
        main(["compare", "--models", "study-relu,unscored"])


def test_a_model_whose_chance_floor_was_never_scored_is_compared_without_it(
    study, tmp_path, monkeypatch, capsys
):
    settings, _ = study
    copy = tmp_path / "delta"
    shutil.copytree(settings.delta_root, copy)
    shutil.rmtree(copy / "study_solu" / "shuffled_scores")
    monkeypatch.setenv("AUTOINTERP_DELTA_ROOT", str(copy))
    main(["compare", "--models", "study-relu,study-solu"])
    lines = capsys.readouterr().out.splitlines()
    relu = [line for line in lines if "study-relu" in line and "│" in line]
    solu = [line for line in lines if "study-solu" in line and "│" in line]
    assert len(relu) == len(solu) == 3
    assert all("null" in line for line in solu) and not any("null" in line for line in relu)


def test_a_model_short_of_the_unigram_margin_is_neither_saved_nor_explained(tmp_path, one_thread):
    corpus = write_text_corpus(tmp_path / "corpus")
    study = TINY_STUDY.replace('["relu", "solu"]', '["relu"]').replace(
        "min_margin = 0.5", "min_margin = 9.0"
    )
    config = tmp_path / "autointerp.toml"
    config.write_text(f'[corpus]\nsource = "text:{corpus}"\nexcerpt_tokens = 16\n{study}')
    settings = load_settings(config, home=tmp_path / "home")
    keys = [dg.AssetKey(["study", "training_data"]), dg.AssetKey(["study", "model_relu"])]
    keys.append(dg.AssetKey(["study_relu", "corpus"]))
    result = dg.materialize(
        study_assets(settings) + model_assets(settings, settings.model("study-relu")),
        selection=keys,
        resources=resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "beats_unigram" in str(failure) and "is not 9.0 under" in str(failure)
    assert not (settings.study.model_folder(settings.home, "relu")).exists()
    materialized = {event.asset_key.path[-1] for event in result.get_asset_materialization_events()}
    assert materialized == {"training_data"}
