"""Scoring one layer: the `score` stage over a layer-sized simulations table (SmolLM2: 1,536
neurons; 5 top + 5 random excerpts in each of the calibration, valid and test splits; 64 tokens),
timed against reading that same table from a Delta table once, in the same run (goal: scoring
well under 10 s, and a small multiple of the read)."""

from __future__ import annotations

import tempfile

import numpy as np
import polars as pl

from autointerp.score.scores import score
from autointerp.storage.delta import read_table, write_partitions
from autointerp.testing.tables import simulations_frame
from benchmarks.common import best_of, save

SPLITS = ("calibration", "valid", "test")
KINDS = ("top", "random")


def simulations_table(neurons: int, per_kind: int, tokens: int, seed: int = 0) -> pl.DataFrame:
    """Sparse true activations (a neuron fires on a few tokens), and a simulator that finds most
    of them with noise: the shapes and value ranges of a real layer."""
    rng = np.random.default_rng(seed)
    rows = neurons * len(SPLITS) * len(KINDS) * per_kind
    true = np.where(rng.random((rows, tokens)) < 0.05, rng.gamma(2.0, 1.5, (rows, tokens)), 0.0)
    expected = np.clip(2.0 * (true > 0) + rng.normal(0, 0.8, (rows, tokens)), 0, 10)
    per_neuron = len(SPLITS) * len(KINDS) * per_kind
    neuron = np.repeat(np.arange(neurons), per_neuron)
    within = np.tile(np.arange(per_neuron), neurons)

    def lists(values: np.ndarray) -> pl.Series:
        return pl.Series(values.astype(np.float32)).cast(pl.List(pl.Float32))

    return simulations_frame(
        {
            "layer": np.zeros(rows, dtype=np.int32),
            "neuron": neuron.astype(np.int32),
            "explainer": ["token-statistics-baseline"] * rows,
            "explainer_hash": ["aa3430e13218"] * rows,
            "simulator": ["lexical-baseline"] * rows,
            "simulator_hash": ["5b0c5a1c6a47"] * rows,
            "sample": np.zeros(rows, dtype=np.int32),
            "excerpt_id": rng.integers(0, 1_000_000, rows),
            "split": np.asarray(SPLITS)[within // (len(KINDS) * per_kind)],
            "kind": np.asarray(KINDS)[(within // per_kind) % len(KINDS)],
            "true_activations": lists(true),
            "expected_activations": lists(expected),
            "call_ids": pl.Series([[]] * rows, dtype=pl.List(pl.Utf8)),
            "error": pl.Series([None] * rows, dtype=pl.Utf8),
        },
    )


def main(neurons: int = 1536, per_kind: int = 5, tokens: int = 64, repeats: int = 3) -> dict:
    frame = simulations_table(neurons, per_kind, tokens)
    with tempfile.TemporaryDirectory() as folder:
        uri = f"{folder}/simulations"
        write_partitions(
            uri, frame, partition_column="layer", partitions=[0], commit_metadata={"bench": "1"}
        )
        # Interleaved, so that other load on the machine disturbs all three alike.
        read_s, score_s, calibrated_s = best_of(
            repeats,
            lambda: read_table(uri, partition_column="layer", partitions=[0]),
            lambda: score(frame, calibrate=False),
            lambda: score(frame, calibrate=True),
        )
    result = {
        "neurons": neurons,
        "simulation_rows": frame.height,
        "tokens": frame.height * tokens,
        "score_rows": score(frame, calibrate=False).height,
        "delta_read_s": read_s,
        "score_s": score_s,
        "score_calibrated_s": calibrated_s,
        "score_over_delta_read_ratio": score_s / read_s,
        "score_calibrated_over_delta_read_ratio": calibrated_s / read_s,
    }
    save("scoring", result)
    return result


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key:40} {value:,.3f}" if isinstance(value, float) else f"{key:40} {value}")
