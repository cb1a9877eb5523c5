"""The code location loads cleanly, and every asset says what it is, where it belongs and which
version of its logic wrote it."""

from __future__ import annotations

import subprocess
import sys

import pipelines.definitions
from autointerp.config.settings import PROJECT_ROOT


def test_code_location_loads_without_warnings():
    # A fresh interpreter with every warning an error, as `dagster dev` would first import it.
    load = "import pipelines.definitions as d; d.defs.resolve_asset_graph()"
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", load],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_asset_says_what_it_is():
    graph = pipelines.definitions.defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    names = {key.path[-1] for key in keys}
    assert {"corpus", "neuron_records", "top_k_excerpts", "explanations", "scores"} <= names
    assert {"training_data", "model_solu", "training_summary", "across_models"} <= names
    for key in keys:
        node = graph.get(key)
        assert node.description, key
        assert node.group_name == key.path[0], key
        assert node.code_version, key


def test_every_model_has_its_own_prefix_and_partitions():
    graph = pipelines.definitions.defs.resolve_asset_graph()
    layers = {
        key.path[0]: len(graph.get(key).partitions_def.get_partition_keys())
        for key in graph.get_all_asset_keys()
        if key.path[-1] == "neuron_records"
    }
    study = {f"study_{a}": 4 for a in ("gelu", "relu", "swiglu", "solu")}
    assert layers == {"smollm2_135m": 30, "gpt2_small": 12, **study}
