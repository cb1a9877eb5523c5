"""Refresh after an explainer change: `autointerp refresh` against a full run, and the UI's
refresh action against `autointerp refresh`, on the default model.

A temporary AUTOINTERP_HOME (sharing the downloads and the converted model) runs the default
configuration over a slice (`layers`, `excerpts`) with `autointerp run`; a copy of that home
(tables and Dagster instance) is made, and in both the baseline explainer profile is edited
(max_cues 5 -> 4). Then, on the same change:

- `autointerp refresh` runs in a process of its own in the first home;
- the UI's action, launching the job `<model>_refresh` (what its Launch Run button sends, here
  through `dagster dev`'s GraphQL), runs in the copy: timed from the launch to the end of the
  refresh run, which starts a process of its own and runs the plan's runs in it.

Reported: the wall times, the ratios (refresh / full run, UI action / CLI refresh), and how many
asset partitions each materialized (neither may touch corpus, neuron_records or top_k_excerpts,
and both follow one plan, so both counts must match).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from autointerp.config.settings import DEFAULT_CONFIG, PROJECT_ROOT, load_settings
from autointerp.testing.dagster_dev import DagsterDev
from benchmarks.common import save
from pipelines.runs import REFRESH_RUN_TAG, refresh_job_name

CHANGE = ("max_cues = 5", "max_cues = 4")
ACTIVATIONS = {"corpus", "neuron_records", "top_k_excerpts"}
START_S, RUN_S = 600, 3600
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def materialized(home: Path, runs: set[str]) -> dict[str, int]:
    """Asset name -> partitions materialized by `runs`."""
    counts: dict[str, int] = {}
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for run_id in runs:
            records = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            for record in records:
                name = record.event_log_entry.dagster_event.asset_key.path[-1]
                counts[name] = counts.get(name, 0) + 1
    return counts


def run_ids(home: Path, tags: dict[str, str] | None = None) -> set[str]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        filters = dg.RunsFilter(tags=tags) if tags else None
        return {run.run_id for run in instance.get_runs(filters=filters)}


def environment(home: Path, config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AUTOINTERP_HOME": str(home),
        "AUTOINTERP_CONFIG": str(config),
        "DAGSTER_HOME": str(home / "dagster"),
        "PYTHONPATH": str(PROJECT_ROOT),
    }


def cli(env: dict[str, str], *args: str) -> float:
    """Wall time of `autointerp ARGS` in a process of its own (imports included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, check=True)
    return time.perf_counter() - start


def ui_refresh(env: dict[str, str], folder: Path, model) -> tuple[float, str]:
    """Wall time from launching `<model>_refresh` in dagster dev to the end of its run."""
    log = folder / "dagster-dev.log"
    with DagsterDev(PROJECT_ROOT, env, log, "pipelines.definitions", START_S) as dev:
        params = {
            "selector": {
                "repositoryLocationName": "pipelines.definitions",
                "repositoryName": "__repository__",
                "jobName": refresh_job_name(model),
            },
            "runConfigData": {},
        }
        start = time.perf_counter()
        launched = dev.graphql(LAUNCH, {"params": params})["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"the refresh job was not launched: {launched}")
        run_id = launched["run"]["runId"]
        status = dev.wait_for(
            lambda: (
                (found := dev.graphql(STATUS, {"id": run_id})["runOrError"]["status"])
                in {"SUCCESS", "FAILURE", "CANCELED"}
                and found
            ),
            "the end of the refresh run",
            RUN_S,
            every=0.5,
        )
        elapsed = time.perf_counter() - start
    if status != "SUCCESS":
        raise RuntimeError(f"refresh run {run_id} ended {status}")
    return elapsed, run_id


def main(layers: str = "0-5", excerpts: int = 500) -> dict:
    shared = load_settings()
    model = shared.model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        homes = {name: folder / name / "home" for name in ("cli", "ui")}
        configs = {name: folder / name / "autointerp.toml" for name in homes}
        home = homes["cli"]
        home.mkdir(parents=True)
        (home / "downloads").symlink_to(shared.downloads)
        (home / "models").symlink_to(shared.model_cache)
        (home / "dagster").mkdir()
        (home / "dagster" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        configs["cli"].write_text(DEFAULT_CONFIG.read_text())
        env = {name: environment(homes[name], configs[name]) for name in homes}

        full_s = cli(env["cli"], "run", "--layers", layers, "--excerpts", str(excerpts))
        full = materialized(home, run_ids(home))
        shutil.copytree(folder / "cli", folder / "ui", symlinks=True)
        text = configs["cli"].read_text()
        assert CHANGE[0] in text, "the default explainer profile changed: update CHANGE"
        for config in configs.values():
            config.write_text(text.replace(*CHANGE, 1))

        before = run_ids(home)
        refresh_s = cli(env["cli"], "refresh")
        refreshed = materialized(home, run_ids(home) - before)
        ui_s, refresh_run = ui_refresh(env["ui"], folder / "ui", model)
        by_ui = materialized(homes["ui"], run_ids(homes["ui"], {REFRESH_RUN_TAG: refresh_run}))
    result = {
        "layers": layers,
        "excerpts": excerpts,
        "full_run_s": full_s,
        "refresh_s": refresh_s,
        "refresh_over_full_ratio": refresh_s / full_s,
        "ui_refresh_s": ui_s,
        "ui_over_cli_refresh_ratio": ui_s / refresh_s,
        "full_run_asset_partitions": sum(full.values()),
        "full_run_assets": len(full),
        "refresh_asset_partitions": sum(refreshed.values()),
        "ui_refresh_asset_partitions": sum(by_ui.values()),
        "refresh_assets": sorted(refreshed),
        "same_partitions": refreshed == by_ui,
        "refresh_touched_activations": bool((set(refreshed) | set(by_ui)) & ACTIVATIONS),
    }
    save("refresh", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
