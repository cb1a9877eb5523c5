"""The reference scale, shaped: a model with GPT-2 XL's neuron layout (48 × 6,400 = 307,200
neurons, tiny hidden size, random weights) through capture, records, baseline explanations,
simulations, scores, summaries and lineage, on a small corpus, from the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest

from autointerp.storage.delta import read_table
from autointerp.testing.reference_scale import write_project
from autointerp.testing.tiny_models import XL_LAYERS, XL_NEURONS
from pipelines.cli import main

EXPLAINED = 4  # neurons per layer the explainer takes


@pytest.fixture
def project(tmp_path, monkeypatch):
    config = write_project(tmp_path, explained=EXPLAINED)
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    return tmp_path / "home" / "delta" / "gpt2_xl_shaped"


@pytest.mark.scale
def test_whole_graph_at_307200_neurons(project, capsys):
    main(["run", "--layers", "all", "--excerpts", "64"])
    records = read_table(
        str(project / "neuron_records"), columns=["layer", "neuron", "max_activation"]
    )
    assert records.height == XL_LAYERS * XL_NEURONS == 307_200
    assert records.group_by("layer").len()["len"].unique().to_list() == [XL_NEURONS]
    assert records["max_activation"].is_finite().all()
    splits = read_table(str(project / "top_k_excerpts"), columns=["layer", "neuron", "split"])
    assert splits.select("layer", "neuron").n_unique() == 307_200
    scores = read_table(str(project / "scores"), columns=["layer", "neuron", "ev_correlation"])
    assert scores.select("layer", "neuron").n_unique() == XL_LAYERS * EXPLAINED
    summary = read_table(str(project / "score_summary"))
    assert summary.filter(pl.col("layer").is_not_null())["layer"].n_unique() == XL_LAYERS
    capsys.readouterr()
    main(["lineage", "--layer", "47", "--neuron", str(EXPLAINED - 1), "--json"])
    chain = json.loads(capsys.readouterr().out)
    text = json.dumps(chain)
    assert '"layer": 47' in text and "neuron_records" in text
