"""The code location loads cleanly, and every asset says what it is, where it belongs and which
version of its logic wrote it."""

from __future__ import annotations

import re
import subprocess
import sys

import dagster as dg

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
        assert node.code_version, key
        # A revision round is a group of its own: the UI shows round 1, round 2, ...
        found = re.fullmatch(r".+_r(\d+)", key.path[-1])
        expected = f"{key.path[0]}_round_{found[1]}" if found else key.path[0]
        assert node.group_name == expected, key
        # Every asset of a model's graph has an up_to_date check, which the sensor keeps
        # current (`autointerp study` plans the study's training the same way).
        if key.path[0] not in ("study", "comparison"):
            assert dg.AssetCheckKey(key, "up_to_date") in graph.asset_check_keys, key


def test_only_models_that_can_run_are_loaded():
    # gpt2-small's weights are on the hub, which is off by default: it is not loaded.
    definitions = pipelines.definitions.defs
    graph = definitions.resolve_asset_graph()
    layers = {
        key.path[0]: len(graph.get(key).partitions_def.get_partition_keys())
        for key in graph.get_all_asset_keys()
        if key.path[-1] == "neuron_records"
    }
    # The study's models are declared by its [study] section, and run once trained.
    study = {f"study_{a}": 4 for a in ("gelu", "relu", "swiglu", "solu")}
    assert layers == {"smollm2_135m": 30, **study}
    models = ["smollm2_135m", *study]
    assert {job.name for job in definitions.jobs} == {
        f"{model}_{job}" for model in models for job in ("graph", "refresh", "maintenance")
    } | {"study"}
    assert sorted(sensor.name for sensor in definitions.sensors) == sorted(
        f"{model}_up_to_date" for model in models
    )


def test_assets_declare_only_what_they_read():
    # The lineage reads left to right: the corpus feeds the capture and the splits (which carry
    # each excerpt's tokens on), and the counterexamples mined from it; nothing else reads it.
    graph = pipelines.definitions.defs.resolve_asset_graph()
    readers = {
        key.path[-1]
        for key in graph.get_all_asset_keys()
        if dg.AssetKey(["smollm2_135m", "corpus"]) in graph.get(key).parent_keys
    }
    mining = {f"{name}_r{k}" for k in (1, 2) for name in ("counterexamples", "revision_calls")}
    assert readers == {"neuron_records", "top_k_excerpts", *mining}
    revised = graph.get(dg.AssetKey(["smollm2_135m", "revised_explanations_r2"])).parent_keys
    assert {key.path[-1] for key in revised} == {
        "counterexamples_r2",
        "revised_explanations_r1",
        "top_k_excerpts",
    }
    scores = graph.get(dg.AssetKey(["smollm2_135m", "scores"])).parent_keys
    assert {key.path[-1] for key in scores} == {"simulations", "explanations"}
