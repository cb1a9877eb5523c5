"""The graph on Dask (dagster-dask, on a `distributed.LocalCluster` of 2 worker processes named
by its scheduler address in autointerp.toml) with the capture split into 3 corpus shards gives the
same tables as one in-process pass."""

from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager

import dagster as dg
import numpy as np
import polars as pl
import pytest
from distributed import Client, LocalCluster

from assets import model_assets
from assets.common import DASK_RESOURCES_TAG
from autointerp.config.settings import load_settings
from autointerp.errors import ConfigError
from autointerp.storage.delta import read_table
from pipelines.cli import main
from pipelines.location import build_definitions
from tests.conftest import write_config, write_text_corpus

DASK = """
[execution]
executor = "dask"
workers = 2
capture_shards = 3
"""


@contextmanager
def local_cluster(tmp_path, monkeypatch):
    """An existing cluster: 2 worker processes, each holding one unit of the GPU resource. Its
    workers inherit the environment the runs use (AUTOINTERP_CONFIG, AUTOINTERP_HOME)."""
    home = tmp_path / "dask"
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(tmp_path / "dask.toml"))
    monkeypatch.setenv("AUTOINTERP_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    # Workers inherit ignored signals. Dagster maps SIGTERM to SIGINT's handler, so in a pytest
    # started with SIGINT ignored (a background job of a script) SIGTERM is ignored after the
    # first Dagster run. Workers started then could not stop the `tail` that Dagster starts to
    # capture each step's logs: every step would wait 30 s for each, and leave it running.
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address=None,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    with cluster:
        yield cluster


# Lineage columns name the run and the table versions read: they differ between two homes.
LINEAGE = r"^(.*run_id|.*_version|.*call_ids|call_id)$"


def _floats(column: pl.Series) -> np.ndarray:
    while column.dtype.is_nested():
        column = column.explode()
    return column.to_numpy()


def assert_same(sharded: pl.DataFrame, one_pass: pl.DataFrame, table: str) -> None:
    """Equal rows, but for lineage columns; floats (nested or not) up to float32 rounding."""
    sharded, one_pass = (f.select(pl.exclude(LINEAGE)) for f in (sharded, one_pass))
    assert sharded.columns == one_pass.columns, table
    floats = [c for c in sharded.columns if _floats(sharded[c][:1]).dtype.kind == "f"]
    keys = [c for c in sharded.columns if c not in floats and not sharded[c].dtype.is_nested()]
    sharded, one_pass = sharded.sort(keys), one_pass.sort(keys)
    assert sharded.drop(floats).equals(one_pass.drop(floats)), table
    for name in floats:
        np.testing.assert_allclose(
            _floats(sharded[name]), _floats(one_pass[name]), rtol=1e-4, atol=1e-6, err_msg=name
        )


def run_in(tmp_path, tiny_model_dir, monkeypatch, name: str, extra: str = ""):
    corpus = write_text_corpus(tmp_path / "corpus")
    extra = "[revisions]\nrounds = 0\n" + extra  # the graph up to scores and summaries
    config = write_config(tmp_path / f"{name}.toml", tiny_model_dir, corpus, extra=extra)
    home = tmp_path / name
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    main(["run", "--layers", "0-1", "--excerpts", "80"])
    return home / "delta" / "tiny"


def test_sharded_graph_on_a_dask_cluster_equals_one_pass(tmp_path, tiny_model_dir, monkeypatch):
    one_pass = run_in(tmp_path, tiny_model_dir, monkeypatch, "local")
    with local_cluster(tmp_path, monkeypatch) as cluster:
        assert len(cluster.workers) == 2
        address = f'scheduler = "{cluster.scheduler_address}"\n'
        sharded = run_in(tmp_path, tiny_model_dir, monkeypatch, "dask", DASK + address)
        # Every step of the sharded runs ran in one of the cluster's worker processes.
        with Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
    assert (sharded / "neuron_records_shard_2").is_dir()
    assert not (one_pass / "neuron_records_shard_0").exists()
    # Every chosen excerpt is the same; activations agree to float32 rounding (a worker's
    # single-threaded matrix products sum in another order than the launching process's).
    for table in ("neuron_records", "top_k_excerpts", "scores", "score_summary"):
        assert_same(*(read_table(str(root / table)) for root in (sharded, one_pass)), table)
    with dg.DagsterInstance.from_config(str(tmp_path / "dask" / "dagster")) as instance:
        runs = instance.get_run_records()
        assert runs and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        step_pids = {
            event.dagster_event.pid
            for r in runs
            for event in instance.all_logs(r.dagster_run.run_id)
            if event.dagster_event and event.dagster_event.event_type_value == "STEP_START"
        }
    assert step_pids and step_pids <= worker_pids


GPU_STEPS = {
    "neuron_records_shard_0",
    "neuron_records_shard_1",
    "neuron_records_shard_2",
} | {
    f"{kind}_r{k}"
    for kind in ("counterexamples", "revised_explanations", "revision_calls")
    for k in (1, 2)
}


@pytest.mark.parametrize("executor", ["multiprocess", "dask"])
def test_gpu_steps_are_limited_per_gpu(tmp_path, tiny_model_dir, executor):
    """A Dagster pool for Dagster's executors; on Dask, one unit of the workers' GPU resource."""
    corpus = write_text_corpus(tmp_path / "corpus")
    extra = f'[execution]\nexecutor = "{executor}"\ncapture_shards = 3\ngpu_pool = "gpu-a100"\n'
    settings = load_settings(write_config(tmp_path / "c.toml", tiny_model_dir, corpus, extra=extra))
    assets = {
        key.path[-1]: a for a in model_assets(settings, settings.model("tiny")) for key in a.keys
    }
    if executor == "dask":
        limited = {n for n, a in assets.items() if DASK_RESOURCES_TAG in a.op.tags}
        assert all(json.loads(assets[n].op.tags[DASK_RESOURCES_TAG]) == {"GPU": 1} for n in limited)
        assert not any(a.op.pool for a in assets.values())
    else:
        limited = {n for n, a in assets.items() if a.op.pool == "gpu-a100"}
    assert limited == GPU_STEPS  # the merge runs no model
    job = build_definitions(settings).resolve_job_def("tiny_graph")
    assert job.executor_def.name == executor


def test_execution_settings_are_checked(tmp_path, tiny_model_dir):
    corpus = write_text_corpus(tmp_path / "corpus")
    for wrong, message in (
        ('executor = "spark"', "executor = 'spark': one of"),
        ('scheduler = "10.0.0.5:8786"', "a Dask scheduler address"),
        ("capture_shards = 0", "capture_shards = 0: a whole number >= 1"),
    ):
        config = write_config(
            tmp_path / "c.toml", tiny_model_dir, corpus, extra=f"[execution]\n{wrong}\n"
        )
        with pytest.raises(ConfigError, match=message):
            load_settings(config)
    existing = write_config(
        tmp_path / "e.toml",
        tiny_model_dir,
        corpus,
        extra='[execution]\nexecutor = "dask"\nscheduler = "tcp://10.0.0.5:8786"\n',
    )
    settings = load_settings(existing)
    assert settings.execution.scheduler == "tcp://10.0.0.5:8786"
