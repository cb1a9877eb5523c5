"""The real offline default (SmolLM2-135M on the Shakespeare corpus) through the CLI, on a slice.

Downloads and the converted model are shared with the rest of the project (AUTOINTERP_HOME, else
.autointerp/); the tables and the Dagster instance go to a temporary home.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from autointerp.config.settings import load_settings
from autointerp.storage.delta import read_table
from pipelines.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def real_home(tmp_path, monkeypatch):
    shared = load_settings()
    for folder in (shared.downloads, shared.model_cache):
        folder.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "downloads").symlink_to(shared.downloads)
    (home / "models").symlink_to(shared.model_cache)
    monkeypatch.delenv("AUTOINTERP_CONFIG", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("AUTOINTERP_HOME", str(home))
    return home


def test_default_model_two_layers(real_home, capsys):
    main(["run", "--layers", "0-1", "--excerpts", "96"])
    assert "smollm2-135m: neuron records per layer" in capsys.readouterr().out
    root = real_home / "delta/smollm2_135m"
    corpus = read_table(str(root / "corpus"))
    assert corpus.height == 96
    assert corpus["license"].unique().to_list() == ["public domain (Project Gutenberg)"]
    records = read_table(str(root / "neuron_records"))
    assert records.height == 2 * 1536
    first = records.filter(layer=1, neuron=7).row(0, named=True)
    assert len(first["top_excerpt_ids"]) == 20 and len(first["random_excerpt_ids"]) == 15
    top = np.array(first["top_activations"])
    assert top.shape == (20, 64)
    np.testing.assert_allclose(top.max(axis=1), first["top_max_activations"], rtol=1e-6)
    assert np.all(np.diff(first["top_max_activations"]) <= 0)
    assert first["max_activation"] == pytest.approx(first["top_max_activations"][0], rel=1e-6)
    splits = read_table(str(root / "top_k_excerpts"))
    per_neuron = splits.filter(layer=0, neuron=0).group_by("split", "kind").len()
    assert dict(
        zip(per_neuron["split"] + "/" + per_neuron["kind"], per_neuron["len"], strict=True)
    ) == {
        "train/top": 5,
        "train/random": 10,  # the reference sample: base rates, never scored
        **{f"{s}/{k}": 5 for s in ("calibration", "valid", "test") for k in ("top", "random")},
    }
    # Every neuron is scored only on excerpts it was not explained with, each once.
    counts = splits.group_by("layer", "neuron").agg(
        rows=pl.len(), distinct=pl.col("excerpt_id").n_unique()
    )
    assert (counts["rows"] == counts["distinct"]).all()
    assert splits.schema["activations"] == pl.List(pl.Float32)
