"""The reference scale, shaped: the GPT-2 XL-shaped model (48 × 6,400 = 307,200 neurons, random
weights, hidden size 32) through the whole graph on a small corpus, and sharded capture on Dask.

- `run`: `autointerp run --layers all` in its own process: wall time, peak RSS, each table's rows
  and size on disk; `autointerp lineage` for one neuron of the last layer (in-process, best of 3)
  against reading the whole scores table once.
- `shards`: corpus + neuron_records for all 48 layers over SHARD_EXCERPTS excerpts, each
  configuration in its own process and home: one pass in-process (the baseline) against runs of
  6 layers in-process that hand the residual stream on (the default), and 3 corpus shards plus
  the merge on dagster-dask with a LocalCluster of 2 worker processes (cluster start-up
  included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autointerp.testing.reference_scale import write_project
from benchmarks.common import best_of, save

EXPLAINED = 4
EXCERPTS = 64
SHARD_EXCERPTS = 384
CAPTURES = {
    "one_pass_in_process": "\n[execution]\ncapture_layers_per_run = 0\n",
    "runs_of_6_in_process": "",
    "three_shards_dask_2_workers": (
        '\n[execution]\nexecutor = "dask"\nworkers = 2\ncapture_shards = 3\n'
    ),
}
PREFIX = "gpt2_xl_shaped"


def _environment(home: Path, config: Path) -> dict[str, str]:
    return os.environ | {
        "AUTOINTERP_CONFIG": str(config),
        "AUTOINTERP_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
    }


def _timed(command: list[str], env: dict[str, str]) -> dict:
    """Wall time and peak RSS (the process itself; its largest child, e.g. a Dask worker)."""
    wrapper = (
        "import resource, runpy, sys, json\n"
        f"sys.argv = {command!r}\n"
        "try:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "finally:\n"
        "    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "    print('PEAK', json.dumps([own, kids]), file=sys.stderr)\n"
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", wrapper], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    peak = next(line for line in done.stderr.splitlines() if line.startswith("PEAK "))
    own, kids = json.loads(peak[5:])
    return {
        "wall_s": round(wall, 2),
        "peak_rss_gb": round(own / 2**20, 3),
        "largest_child_rss_gb": round(kids / 2**20, 3),
    }


def _table_sizes(root: Path) -> dict:
    import polars as pl

    sizes = {}
    for table in sorted(p for p in root.iterdir() if p.is_dir()):
        files = list(table.rglob("*.parquet"))
        rows = pl.scan_delta(str(table)).select(pl.len()).collect().item() if files else 0
        sizes[table.name] = {
            "rows": rows,
            "mb": round(sum(f.stat().st_size for f in files) / 2**20, 2),
        }
    return sizes


def whole_graph(folder: Path) -> dict:
    config = write_project(folder, explained=EXPLAINED)
    home = folder / "home"
    env = _environment(home, config)
    run = _timed(["pipelines.cli", "run", "--layers", "all", "--excerpts", str(EXCERPTS)], env)
    root = home / "delta" / PREFIX
    from autointerp.lineage.read import score_lineage
    from autointerp.storage.delta import read_table

    lineage_s, scores_s = best_of(
        3,
        lambda: score_lineage(str(root), 47, EXPLAINED - 1),
        lambda: read_table(str(root / "scores")),
    )
    return {
        "neurons": 48 * 6400,
        "excerpts": EXCERPTS,
        "explained_per_layer": EXPLAINED,
        "run": run,
        "tables": _table_sizes(root),
        "lineage_s": round(lineage_s, 4),
        "read_scores_s": round(scores_s, 4),
        "lineage_over_read_scores": round(lineage_s / scores_s, 2),
    }


def records_only() -> None:
    """(In a subprocess.) Materialize corpus and neuron_records of every layer."""
    from assets.neuron_records import shard_names
    from autointerp.config.settings import load_settings
    from pipelines.cli import _environment, materializer

    settings = load_settings()
    _environment(settings)
    model = settings.model()
    materialize = materializer(settings, model, "benchmark")
    materialize([materialize.key("corpus")], config=materialize.corpus_config(SHARD_EXCERPTS))
    names = [*shard_names(settings), "neuron_records"]
    last = str(model.num_layers - 1)
    materialize([materialize.key(name) for name in names], ("0", last))


def sharded_capture(folder: Path) -> dict:
    found = {}
    for name, extra in CAPTURES.items():
        config = write_project(folder / name, explained=EXPLAINED, extra=extra)
        env = _environment(folder / name / "home", config)
        found[name] = _timed(["benchmarks.scale", "records"], env)
    base = found["one_pass_in_process"]
    return {
        "excerpts": SHARD_EXCERPTS,
        "layers": 48,
        **found,
        **{
            f"{name}_over_one_pass": {
                what: round(found[name][what] / base[what], 2) for what in ("wall_s", "peak_rss_gb")
            }
            for name in list(CAPTURES)[1:]
        },
    }


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "whole_graph": whole_graph(Path(tmp) / "graph"),
            "sharded_capture": sharded_capture(Path(tmp) / "shards"),
        }
    save("scale", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["records"]:
        records_only()
    else:
        print(json.dumps(main(), indent=2))
