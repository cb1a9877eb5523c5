"""The Dagster UI on the project's instance: it sees the staleness the CLI sees, and a refresh
launched through it brings the unsynced assets back in sync.

A real `dagster dev -w workspace.yaml` is started on 127.0.0.1 with DAGSTER_HOME under
AUTOINTERP_HOME (as `make ui` does) and driven through its GraphQL API, the one the UI's pages
and buttons call.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from autointerp.config.settings import PROJECT_ROOT, load_settings
from pipelines.cli import LAYER_ASSETS, main
from pipelines.definitions import records_job_name
from tests.conftest import statuses, write_config, write_text_corpus

PROFILES = """
[pipeline]
explainers = ["token-statistics-baseline"]
simulators = ["lexical-baseline"]

[simulators.lexical-baseline]
kind = "baseline"
method = "lexical-baseline"
calibration = {calibration}

[revisions]
rounds = 0
"""

LOCATION = "pipelines.definitions"  # a python_module location is named after its module
NODES_QUERY = """
{
  assetNodes(group: {groupName: "tiny", repositoryName: "__repository__",
                     repositoryLocationName: "pipelines.definitions"}) {
    assetKey { path }
    isPartitioned
  }
}
"""
# What the asset graph shows: per layer for the partitioned assets, one status for the others.
STALE_QUERY = """
query Stale($partitioned: [AssetKeyInput!], $whole: [AssetKeyInput!], $layers: [String!]) {
  partitioned: assetNodes(assetKeys: $partitioned) {
    assetKey { path }
    staleStatusByPartition(partitions: $layers)
  }
  whole: assetNodes(assetKeys: $whole) {
    assetKey { path }
    staleStatus
  }
}
"""
LAYERS = ["0", "1"]
LOCATION_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""
# The assets the UI's "Materialize unsynced" picks after a simulator profile changed.
STALE_ASSETS = ["simulations", "simulator_calls", "shuffled_scores", "scores"]
SERVER_START_S = 120
RUN_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_location(client: DagsterGraphQLClient, server: subprocess.Popen, log: Path) -> None:
    """Until the webserver answers and the code location has loaded (bounded)."""
    deadline = time.monotonic() + SERVER_START_S
    last = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster dev exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            last = client._execute(LOCATION_QUERY)["workspaceOrError"]
        except DagsterGraphQLClientError:
            time.sleep(0.5)
            continue
        entries = {e["name"]: e for e in last.get("locationEntries", [])}
        entry = entries.get(LOCATION)
        if entry and entry["loadStatus"] == "LOADED":
            error = entry["locationOrLoadError"]
            assert error["__typename"] == "RepositoryLocation", error
            return
        time.sleep(0.5)
    pytest.fail(
        f"code location not loaded in {SERVER_START_S} s: {last}\n{log.read_text()[-4000:]}"
    )


def ui_statuses(client: DagsterGraphQLClient) -> dict[str, dict[str, str]]:
    """Each asset's stale status per layer ("None" for an unpartitioned one), read as the UI
    reads it; the same shape as `tests.test_refresh.statuses`."""
    nodes = client._execute(NODES_QUERY)["assetNodes"]
    keys = {
        flag: [{"path": n["assetKey"]["path"]} for n in nodes if n["isPartitioned"] is flag]
        for flag in (True, False)
    }
    data = client._execute(
        STALE_QUERY, {"partitioned": keys[True], "whole": keys[False], "layers": LAYERS}
    )
    view = {
        n["assetKey"]["path"][-1]: dict(zip(LAYERS, n["staleStatusByPartition"], strict=True))
        for n in data["partitioned"]
    }
    view.update({n["assetKey"]["path"][-1]: {"None": n["staleStatus"]} for n in data["whole"]})
    return view


def materialized(home: Path, run_id: str) -> set[tuple[str, str]]:
    """(asset, layer) of every materialization the run recorded in the project's instance."""
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        records = instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
    return {
        (
            r.event_log_entry.dagster_event.asset_key.path[-1],
            r.event_log_entry.dagster_event.partition,
        )
        for r in records
    }


def wait_for_run(client: DagsterGraphQLClient, run_id: str) -> str:
    deadline = time.monotonic() + RUN_S
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            return status
        time.sleep(0.5)
    pytest.fail(f"run {run_id} not finished in {RUN_S} s (last status {status})")


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch):
    """A tiny project with layers 0-1 materialized by the CLI, and a function to edit its
    simulator profile."""
    corpus = write_text_corpus(tmp_path / "corpus")
    config = tmp_path / "autointerp.toml"
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.delenv("AUTOINTERP_ALLOW_HUB", raising=False)

    def calibrate(on: bool) -> None:
        extra = PROFILES.format(calibration=str(on).lower())
        write_config(config, tiny_model_dir, corpus, extra=extra)

    calibrate(False)
    main(["run", "--layers", "0-1", "--excerpts", "60"])
    return calibrate, home, tmp_path


def test_ui_sees_unsynced_assets_and_launches_their_refresh(project):
    calibrate, home, tmp_path = project
    assert all(v == "FRESH" for per in statuses(home).values() for v in per.values())

    # Calibrating the simulator changes its profile hash: simulations and scores turn unsynced,
    # explanations and everything upstream of them stay in sync.
    calibrate(True)
    cli_view = statuses(home)
    assert cli_view["simulations"] == {"0": "STALE", "1": "STALE"}

    port = free_port()
    log = tmp_path / "dagster-dev.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-w",
                "workspace.yaml",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=PROJECT_ROOT,
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        wait_for_location(client, server, log)

        # The UI reads the same staleness as the CLI.
        ui_view = ui_statuses(client)
        unsynced = {name for name, per in ui_view.items() if "STALE" in per.values()}
        assert unsynced == set(STALE_ASSETS), ui_view
        for name in STALE_ASSETS:
            assert ui_view[name] == {"0": "STALE", "1": "STALE"}, (name, ui_view)
        for name in ("neuron_records", "top_k_excerpts", "explanations", "explainer_calls"):
            assert ui_view[name] == {"0": "FRESH", "1": "FRESH"}, (name, ui_view)
        assert ui_view == cli_view

        # Launch the refresh through the webserver: the unsynced assets, layers 0-1, one run.
        run_id = client.submit_job_execution(
            records_job_name(load_settings().model("tiny")),
            repository_location_name=LOCATION,
            repository_name="__repository__",
            asset_selection=[["tiny", name] for name in STALE_ASSETS],
            tags={
                "dagster/asset_partition_range_start": "0",
                "dagster/asset_partition_range_end": "1",
            },
        )
        status = wait_for_run(client, run_id)
        assert status == "SUCCESS", f"run {run_id}: {status}\n{log.read_text()[-4000:]}"

        # In sync again, in the UI's eyes and the CLI's.
        ui_view = ui_statuses(client)
        for name in LAYER_ASSETS:
            assert ui_view[name] == {"0": "FRESH", "1": "FRESH"}, (name, ui_view)
        # Staleness is not transitive: the summaries turn unsynced only now that scores changed.
        assert ui_view["score_summary"] == ui_view["compare"] == {"None": "STALE"}
        assert ui_view == statuses(home)
        assert materialized(home, run_id) == {(n, layer) for n in STALE_ASSETS for layer in LAYERS}
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # dagster dev's own shutdown ignores SIGTERM
        server.wait(timeout=30)
