"""The published format on one SmolLM2-sized layer (1,536 neurons; 20 top, 15 random, 10 reference
and 4 x 5 quantile-band excerpts of 64 tokens each; explained and scored by the baselines).

- import: the layer's files (written by the export) into the three frames of the import, against
  reading the same neuron records from their Delta table;
- export: the layer's tables, read from Delta, into the published layout.

Each configuration runs in a process of its own (the best of `repeats` timings), which reports
its peak RSS; the ratios divide by the Delta read of the same run.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autointerp.config.settings import RecordsSpec
from autointerp.storage.delta import read_table, table_version, write_partitions

LAYER, NEURONS, TOKENS = 0, 1536, 64
TABLES = ("corpus", "neuron_records", "explanations", "simulations", "scores")
MODES = ("delta", "import", "export")


def prepare(root: Path) -> None:
    """The layer's tables under root/model, and its published files under root/published."""
    from autointerp.interchange.exporting import export_openai, read_layer
    from autointerp.testing.layers import synthetic_layers

    layers = synthetic_layers([LAYER], NEURONS, RecordsSpec(), tokens=TOKENS, excerpts=20_000)
    model = root / "model"
    for name in TABLES:
        frame = getattr(layers, "records" if name == "neuron_records" else name)
        partitioned = "layer" in frame.columns
        write_partitions(
            str(model / name),
            frame,
            partition_column="layer" if partitioned else None,
            partitions=[LAYER] if partitioned else None,
            commit_metadata={"benchmark": "interchange"},
        )
    versions = _versions(model)
    export_openai(root / "published", [LAYER], _reader(model, versions, read_layer), {})


def _versions(model: Path) -> dict[str, int]:
    return {name: int(table_version(str(model / name)) or 0) for name in TABLES}


def _reader(model: Path, versions: dict[str, int], read_layer):
    def read(layer: int):
        return read_layer(
            str(model), layer, "token-statistics-baseline", "lexical-baseline", versions
        )

    return read


def measure(mode: str, root: Path, repeats: int) -> dict:
    """Run in a child process: time `mode` (best of `repeats`), report it with the peak RSS."""
    from autointerp.interchange.exporting import export_openai, read_layer
    from autointerp.interchange.importing import import_layers
    from autointerp.interchange.layout import Dataset

    model = root / "model"
    versions = _versions(model)
    before = _peak_rss_mb()

    def work(attempt: int) -> None:
        if mode == "delta":
            read_table(str(model / "neuron_records"), partition_column="layer", partitions=[LAYER])
        elif mode == "import":
            import_layers(
                Dataset(str(root / "published")),
                [LAYER],
                neurons=NEURONS,
                neuron_sample="all",
                spec=RecordsSpec(),
            )
        else:
            out = root / f"export-{attempt}"
            export_openai(out, [LAYER], _reader(model, versions, read_layer), {})

    spent = []
    for attempt in range(repeats):
        start = time.perf_counter()
        work(attempt)
        spent.append(time.perf_counter() - start)
    seconds = min(spent)
    return {
        "seconds": seconds,
        "neurons_per_s": NEURONS / seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_work_mb": before,  # the libraries loaded: what the work's peak adds to
    }


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux carries ru_maxrss across exec, so a child started by a
    large parent would report the parent's; VmHWM belongs to the process's own address space."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(repeats: int = 2) -> dict:
    from benchmarks.common import save  # imports the subject model's libraries: not in children

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        prepare(root)
        files = sum(p.stat().st_size for p in (root / "published").rglob("*") if p.is_file())
        runs = {}
        for mode in MODES:
            child = ["--child", mode, str(root), str(repeats)]
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.interchange", *child],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[mode] = json.loads(out.strip().splitlines()[-1])
    delta = runs["delta"]["seconds"]
    result = {
        "neurons": NEURONS,
        "published_files_mb": files / 2**20,
        **{f"{mode}_{key}": value for mode, run in runs.items() for key, value in run.items()},
        "import_over_delta_read_ratio": runs["import"]["seconds"] / delta,
        "export_over_delta_read_ratio": runs["export"]["seconds"] / delta,
    }
    save("interchange", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        mode, root, repeats = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(measure(mode, root, repeats)))
    else:
        print(json.dumps(main(), indent=2))
