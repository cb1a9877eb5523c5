"""Refresh after an explainer change, against a full rematerialization, on the default model.

A temporary AUTOINTERP_HOME (sharing the downloads and the converted model) runs the default
configuration over a slice (`layers`, `excerpts`), then edits the baseline explainer profile
(max_cues 5 -> 4) and runs `autointerp refresh`. Reported: both wall times, their ratio, and how
many asset partitions each materialized (the refresh must never touch corpus, neuron_records or
top_k_excerpts).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import dagster as dg

from autointerp.config.settings import DEFAULT_CONFIG, load_settings
from benchmarks.common import save
from pipelines.cli import main as cli

CHANGE = ("max_cues = 5", "max_cues = 4")


def materialized(home: Path, skip: set[str]) -> tuple[set[str], dict[str, int]]:
    """(run ids, asset name -> partitions materialized) of the runs not in `skip`."""
    counts: dict[str, int] = {}
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = {run.run_id for run in instance.get_runs()}
        for run_id in runs - skip:
            records = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            for record in records:
                name = record.event_log_entry.dagster_event.asset_key.path[-1]
                counts[name] = counts.get(name, 0) + 1
    return runs, counts


def _run_and_refresh(home: Path, config: Path, layers: str, excerpts: int) -> tuple:
    start = time.perf_counter()
    cli(["run", "--layers", layers, "--excerpts", str(excerpts)])
    full_s = time.perf_counter() - start
    runs, full = materialized(home, set())
    text = config.read_text()
    assert CHANGE[0] in text, "the default explainer profile changed: update CHANGE"
    config.write_text(text.replace(*CHANGE, 1))
    start = time.perf_counter()
    cli(["refresh"])
    refresh_s = time.perf_counter() - start
    _, refreshed = materialized(home, runs)
    return full_s, refresh_s, full, refreshed


def main(layers: str = "0-5", excerpts: int = 500) -> dict:
    shared = load_settings()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        home.mkdir()
        (home / "downloads").symlink_to(shared.downloads)
        (home / "models").symlink_to(shared.model_cache)
        config = Path(folder) / "autointerp.toml"
        config.write_text(DEFAULT_CONFIG.read_text())
        saved = dict(os.environ)
        os.environ.update(
            AUTOINTERP_HOME=str(home),
            AUTOINTERP_CONFIG=str(config),
            DAGSTER_HOME=str(home / "dagster"),
        )
        try:
            full_s, refresh_s, full, refreshed = _run_and_refresh(home, config, layers, excerpts)
        finally:  # the other benchmarks of this process read the project's own settings
            os.environ.clear()
            os.environ.update(saved)
    result = {
        "layers": layers,
        "excerpts": excerpts,
        "full_run_s": full_s,
        "refresh_s": refresh_s,
        "refresh_over_full_ratio": refresh_s / full_s,
        "full_run_asset_partitions": sum(full.values()),
        "full_run_assets": len(full),
        "refresh_asset_partitions": sum(refreshed.values()),
        "refresh_assets": sorted(refreshed),
        "refresh_touched_activations": bool(
            set(refreshed) & {"corpus", "neuron_records", "top_k_excerpts"}
        ),
    }
    save("refresh", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
