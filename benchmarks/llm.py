"""LLM stage throughput: the explain stage against the scripted OpenAI-compatible server with
200 ms added to every reply, at several concurrency bounds, over a few hundred synthetic neurons.

- efficiency = ideal time (neurons × latency / concurrency) / measured time: 1.0 means the
  client keeps `concurrency` calls in flight all the time and adds nothing of its own;
- a second run over the same response cache: how many HTTP calls it made (goal: 0) and its wall
  time as a ratio of the first run's at the same concurrency.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.config.profiles import explainer_profile
from autointerp.explain.explanations import explain
from autointerp.llm.client import LLMClient
from autointerp.testing.llm_server import LLMServer
from benchmarks.common import save

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


def reply(_received) -> str:
    return " words about the benchmark."


def _serve(latency_s: float, pipe) -> None:
    """The child process: serve until told to stop, answering the parent's questions."""
    with LLMServer(reply, latency_s=latency_s) as server:
        pipe.send(server.url)
        while (command := pipe.recv()) != "stop":
            if command == "reset":
                server.max_in_flight = 0
            pipe.send(server.count() if command == "count" else server.max_in_flight)


class ServerProcess:
    """The scripted server in its own process: in the benchmark's process, its threads would
    compete with the client for the GIL and the measurement would charge the server's CPU time
    to the client."""

    def __init__(self, latency_s: float) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(latency_s, child), daemon=True
        )

    def __enter__(self) -> ServerProcess:
        self.process.start()
        self.url = self.pipe.recv()
        return self

    def __exit__(self, *exc) -> None:
        self.pipe.send("stop")
        self.process.join(timeout=10)

    def ask(self, command: str) -> int:
        self.pipe.send(command)
        return self.pipe.recv()

    def count(self) -> int:
        return self.ask("count")

    def reset_max_in_flight(self) -> None:
        self.pipe.send("reset")
        self.pipe.recv()


def run(server: ServerProcess, excerpts: pl.DataFrame, concurrency: int, cache: Path) -> dict:
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
    server.reset_max_in_flight()
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
    with ServerProcess(latency_s) as server:
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
                    "max_in_flight": server.ask("max_in_flight"),
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
