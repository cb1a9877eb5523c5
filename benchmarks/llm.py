"""LLM stage throughput: the explain stage against the scripted OpenAI-compatible server with
200 ms added to every reply, at several concurrency bounds, over a few hundred synthetic neurons.

- efficiency = ideal time (neurons × latency / concurrency) / measured time: 1.0 means the
  client keeps `concurrency` calls in flight all the time and adds nothing of its own;
- a second run over the same response cache: how many HTTP calls it made (goal: 0) and its wall
  time as a ratio of the first run's at the same concurrency.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.explanations import explain
from autointerp.llm import LLMClient
from autointerp.profiles import explainer_profile
from benchmarks.common import save
from tests.llm_server import LLMServer

WORDS = [f" w{i}" for i in range(500)]


def train_excerpts(neurons: int, records: int = 5, tokens: int = 64, seed: int = 0) -> pl.DataFrame:
    """A neuron_excerpts frame holding only what the explainer reads: each neuron's train top
    records, random words with a few firing tokens, so every neuron's prompt is distinct."""
    rng = np.random.default_rng(seed)
    rows = neurons * records
    words = np.asarray(WORDS)[rng.integers(0, len(WORDS), (rows, tokens))]
    acts = np.where(rng.random((rows, tokens)) < 0.05, rng.gamma(2.0, 1.5, (rows, tokens)), 0.0)
    return pl.DataFrame(
        {
            "layer": np.zeros(rows, dtype=np.int32),
            "neuron": np.repeat(np.arange(neurons), records).astype(np.int32),
            "split": ["train"] * rows,
            "kind": ["top"] * rows,
            "rank": np.tile(np.arange(records), neurons).astype(np.int32),
            "excerpt_id": np.arange(rows, dtype=np.int64),
            "max_activation": acts.max(axis=1).astype(np.float32),
            "activations": pl.Series(acts.astype(np.float32)).cast(pl.List(pl.Float32)),
            "tokens": pl.Series(words).cast(pl.List(pl.Utf8)),
        }
    )


def run(server: LLMServer, excerpts: pl.DataFrame, concurrency: int, cache: Path) -> dict:
    profile = explainer_profile(
        "bench",
        {
            "kind": "llm",
            "model": "bench",
            "base_url": server.url,
            "n": 1,
            "max_concurrency": concurrency,
            "neuron_sample": "all",
        },
    )
    before = server.count()
    server.max_in_flight = 0
    with LLMClient(profile.endpoint(), cache) as client:
        start = time.perf_counter()
        frame, calls = explain(profile, excerpts, client=client)
        wall = time.perf_counter() - start
    assert frame["error"].null_count() == frame.height, "the scripted server never fails"
    return {"wall_s": wall, "http_calls": server.count() - before, "results": len(calls)}


def main(
    neurons: int = 256, latency_s: float = 0.2, concurrencies: tuple[int, ...] = (1, 8, 32, 64)
) -> dict:
    excerpts = train_excerpts(neurons)
    result: dict[str, object] = {"neurons": neurons, "latency_s": latency_s}
    with LLMServer(lambda _: " words about the benchmark.", latency_s=latency_s) as server:
        with tempfile.TemporaryDirectory() as folder:
            for concurrency in concurrencies:
                cache = Path(folder) / f"cache-{concurrency}"  # a cold cache for each bound
                first = run(server, excerpts, concurrency, cache)
                ideal = neurons * latency_s / concurrency
                # What each call costs beyond the latency, as seen by one of the slots.
                overhead_ms = 1000 * (first["wall_s"] - ideal) * concurrency / neurons
                result[f"concurrency_{concurrency}"] = {
                    **first,
                    "ideal_s": ideal,
                    "efficiency": ideal / first["wall_s"],
                    "overhead_ms_per_call": overhead_ms,
                    "max_in_flight": server.max_in_flight,
                }
            again = run(server, excerpts, concurrency, cache)
        result["cached_rerun"] = {
            "concurrency": concurrency,
            "http_calls": again["http_calls"],
            "wall_s": again["wall_s"],
            "wall_over_first_run_ratio": again["wall_s"] / first["wall_s"],
        }
    save("llm", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
