"""The neuron viewer over a model's worth of tables (SmolLM2-135M: 30 layers × 1,536 neurons), as a
user meets it: `autointerp view` in a process of its own, pages fetched over HTTP from this one.

The tables are the lineage benchmark's (fabricated with the pipeline's schemas, one commit per
layer), with neuron_records complete (moments, quantile boundaries, 4 bands of 5 excerpts; 32
neurons per row group, as the pipeline writes them), plus score_summary and one revision round (32
neurons per layer, 10 counterexamples each). simulator_calls is left out: the viewer reads only
its history.

Protocol: the overview first; then for each of a few random layers, its page at the first visit
(the layer's tables are read), the same layer sorted by score, filtered and on page 2 (cached),
and random neurons of it, each neuron's page once; then neurons of layers never visited. Every
latency is also given as a ratio of one read of the whole scores table, timed here in the same
run. Last, `autointerp view --export DIR --layers L` for one layer.
"""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.config.settings import PROJECT_ROOT
from autointerp.score.summary import score_summary
from autointerp.storage.delta import read_table
from autointerp.storage.schemas import COUNTEREXAMPLES_SCHEMA, REVISIONS_SCHEMA
from benchmarks import lineage
from benchmarks.common import best_of, save

MODEL = "smollm2-135m"
VISITED_LAYERS = 6
NEURONS_PER_LAYER = 10
COLD_NEURONS = 6
REVISED, COUNTEREXAMPLES = 32, 10
EXPORT_LAYER = 11


def revision_tables(layer_tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """One revision round of the first REVISED neurons of a layer (as layer 0)."""
    explanations = layer_tables["explanations"].filter(pl.col("neuron") < REVISED)
    n = explanations.height
    kept = np.arange(n) % 3 == 0
    revised = pl.DataFrame(
        {
            **{k: explanations[k] for k in ("layer", "neuron", "explainer", "explainer_hash")},
            "sample": explanations["sample"],
            "simulator": lineage.SIMULATOR[0],
            "simulator_hash": lineage.SIMULATOR[1],
            "round": 1,
            "explanation": explanations["explanation"],
            "calibration_score": np.full(n, 0.5),
            "reported_score": np.full(n, 0.45),
            "previous_explanation": explanations["explanation"],
            "revised_explanation": explanations["explanation"] + " (not after 'thou')",
            "kept": kept,
            "previous_score": np.full(n, 0.4),
            "candidate_score": np.where(kept, 0.5, 0.35),
            "previous_reported_score": np.full(n, 0.4),
            "counterexamples": np.full(n, COUNTEREXAMPLES),
            "prompt_hash": None,
            "call_ids": [[] for _ in range(n)],
            "error": None,
        },
        schema=REVISIONS_SCHEMA | {"layer": pl.Int32},
    )
    rng = np.random.default_rng(1)
    rows = n * COUNTEREXAMPLES
    tokens = rng.choice(lineage.VOCABULARY, (rows, 20))
    counter = pl.DataFrame(
        {
            "layer": np.zeros(rows, dtype=np.int32),
            "neuron": np.repeat(explanations["neuron"].to_numpy(), COUNTEREXAMPLES),
            "explainer": lineage.EXPLAINER[0],
            "explainer_hash": lineage.EXPLAINER[1],
            "simulator": lineage.SIMULATOR[0],
            "simulator_hash": lineage.SIMULATOR[1],
            "round": 1,
            "explanation": np.repeat(explanations["explanation"].to_numpy(), COUNTEREXAMPLES),
            "source": np.where(np.arange(rows) % 2 == 0, "generated", "mined"),
            "expected": np.where(np.arange(rows) % 2 == 0, "activating", "false_positive"),
            "text": ["".join(row) for row in tokens],
            "tokens": [list(row) for row in tokens],
            "true_activations": rng.gamma(1.0, 1.0, (rows, 20)).astype(np.float32).tolist(),
            "predicted": rng.uniform(0, 10, (rows, 20)).astype(np.float32).tolist(),
            "miss": rng.uniform(0.2, 1, rows),
            "truncated": False,
            "excerpt_id": None,
            "call_ids": [[] for _ in range(rows)],
            "error": None,
        },
        schema=COUNTEREXAMPLES_SCHEMA | {"layer": pl.Int32},
    )
    return {"revised_explanations_r1": revised, "counterexamples_r1": counter}


def build(root: Path) -> None:
    tables = lineage.build(root, full_records=True, skip=("simulator_calls",))
    for name, frame in revision_tables(tables).items():
        for layer in range(lineage.LAYERS):
            lineage.write(root, name, frame.with_columns(layer=pl.lit(layer, pl.Int32)), layer)
    scores = read_table(str(root / lineage.PREFIX / "scores"))
    lineage.write(root, "score_summary", score_summary(scores), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """One keep-alive connection, asking for gzip as a browser does; times each page whole."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path: str) -> tuple[float, int, int]:
        """(seconds, status, bytes of HTML)"""
        start = time.perf_counter()
        self.connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = self.connection.getresponse()
        body = response.read()
        spent = time.perf_counter() - start
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return spent, response.status, len(body)


def serve(env: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "view", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.stderr.read().decode()) from None
            time.sleep(0.2)


def summary(times: list[float], read_s: float) -> dict:
    ordered = sorted(times)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "pages": len(times),
        "median_ms": median * 1000,
        "p95_ms": p95 * 1000,
        "median_over_scores_read": median / read_s,
        "p95_over_scores_read": p95 / read_s,
    }


def measure(root: Path, scratch: Path, seed: int = 0) -> dict:
    """The protocol over the tables under `root` (as `build` writes them); `scratch` holds the
    server's home and the export."""
    rng = np.random.default_rng(seed)
    scores_uri = str(root / lineage.PREFIX / "scores")
    [read_s] = best_of(5, lambda: read_table(scores_uri))
    env = {
        **os.environ,
        "AUTOINTERP_DELTA_ROOT": str(root),
        "AUTOINTERP_HOME": str(scratch / "home"),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    env.pop("AUTOINTERP_CONFIG", None)  # the project's configuration declares SmolLM2
    port = free_port()
    process = serve(env, port)
    try:
        client = Client(port)
        base = f"/m/{MODEL}"
        overview_s, status, _ = client.get(base)
        assert status == 200, status
        layers = rng.choice(lineage.LAYERS, VISITED_LAYERS + 1, replace=False).tolist()
        visited, unvisited = layers[:VISITED_LAYERS], layers[VISITED_LAYERS]
        first_visit, cached_layer, neuron, sizes = [], [], [], []
        for layer in visited:
            first_visit.append(client.get(f"{base}/l/{layer}")[0])
            for query in ("?sort=score", "?q=the&sort=max_activation", "?page=2"):
                cached_layer.append(client.get(f"{base}/l/{layer}{query}")[0])
            for n in rng.choice(lineage.NEURONS, NEURONS_PER_LAYER, replace=False).tolist():
                spent, status, size = client.get(f"{base}/l/{layer}/n/{n}")
                assert status == 200, status
                neuron.append(spent)
                sizes.append(size)
        cold = [
            client.get(f"{base}/l/{unvisited}/n/{n}")[0]
            for n in rng.choice(lineage.NEURONS, COLD_NEURONS, replace=False).tolist()
        ]
        search_s = client.get(f"{base}/search?q=king")[0]
        overview_again_s = client.get(base)[0]
    finally:
        process.terminate()
        process.wait(timeout=30)
    out = scratch / "export"
    start = time.perf_counter()
    export = ["view", "--export", str(out), "--layers", str(EXPORT_LAYER)]
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *export], env=env, check=True, capture_output=True
    )
    export_s = time.perf_counter() - start
    return {
        "layers": lineage.LAYERS,
        "neurons_per_layer": lineage.NEURONS,
        "read_scores_table_ms": read_s * 1000,
        "overview_first_ms": overview_s * 1000,
        "overview_again_ms": overview_again_s * 1000,
        "neuron_page": summary(neuron, read_s),
        "neuron_page_layer_not_visited": summary(cold, read_s),
        "neuron_page_html_kb_median": statistics.median(sizes) / 1000,
        "layer_page_first_visit": summary(first_visit, read_s),
        "layer_page_sorted_filtered_paged": summary(cached_layer, read_s),
        "search_ms": search_s * 1000,
        "export_one_layer_s": export_s,
        "export_pages": len(list(out.rglob("*.html"))),
        "export_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6,
    }


def main(seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as folder:
        root = Path(folder) / "delta"
        start = time.perf_counter()
        build(root)
        result = {"build_s": time.perf_counter() - start, **measure(root, Path(folder), seed)}
    save("viewer", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
