"""Explainers compared on the neurons they share: pairing, sample choice, NaN, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from autointerp.score.compare import compare_explainers, format_comparison
from autointerp.score.statistics import bootstrap_mean_interval
from autointerp.storage.schemas import SCORES_SCHEMA


def score_rows(
    explainer: str,
    neurons: range,
    test: list[float],
    *,
    valid: list[float] | None = None,
    sample: int = 0,
    simulator: str = "lexical",
    layer: int = 2,
) -> list[dict]:
    """valid and test top_and_random rows (and a test top row, which must be ignored)."""
    valid = valid if valid is not None else [0.5] * len(test)
    rows = []
    for neuron, t, v in zip(neurons, test, valid, strict=True):
        common = {
            "layer": layer,
            "neuron": neuron,
            "explainer": explainer,
            "explainer_hash": f"{explainer}-hash",
            "simulator": simulator,
            "simulator_hash": f"{simulator}-hash",
            "sample": sample,
            "rsquared": 0.0,
            "absolute_dev_explained": 0.0,
            "excerpt_ids": [neuron],
            "calibrated": False,
        }
        rows += [
            {**common, "split": "test", "scored_on": "top_and_random", "ev_correlation": t},
            {**common, "split": "valid", "scored_on": "top_and_random", "ev_correlation": v},
            {**common, "split": "test", "scored_on": "top", "ev_correlation": -1.0},
        ]
    return rows


def frame(*parts: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([row for part in parts for row in part], schema=SCORES_SCHEMA)


def test_pairs_share_neurons_and_exclude_nan_pairwise() -> None:
    nan = float("nan")
    scores = frame(
        score_rows("big", range(0, 6), [0.9, 0.8, 0.7, 0.6, nan, 0.5]),
        score_rows("small", range(2, 8), [0.7, 0.1, 0.2, nan, 0.3, 0.3]),
    )
    [row] = compare_explainers(scores, n_boot=200).iter_rows(named=True)
    assert (row["explainer_a"], row["explainer_b"]) == ("big", "small")
    # Shared: neurons 2-5. Neuron 4 has NaN for big, neuron 5 for small: both left out.
    assert row["shared"] == 4 and row["compared"] == 2
    assert row["mean_a"] == pytest.approx((0.7 + 0.6) / 2)
    assert row["mean_b"] == pytest.approx((0.7 + 0.1) / 2)
    assert row["mean_diff"] == pytest.approx(0.25)
    assert (row["wins_a"], row["wins_b"], row["ties"]) == (1, 0, 1)
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]


def test_each_neuron_counts_with_its_sample_chosen_on_valid() -> None:
    scores = frame(
        # Sample 1 is better on test but worse on valid: sample 0 is the one compared.
        score_rows("a", range(3), [0.2, 0.2, 0.2], valid=[0.9, 0.9, 0.9], sample=0),
        score_rows("a", range(3), [0.9, 0.9, 0.9], valid=[0.1, 0.1, 0.1], sample=1),
        score_rows("b", range(3), [0.4, 0.4, 0.4]),
    )
    row = compare_explainers(scores, n_boot=100).row(0, named=True)
    assert row["mean_a"] == pytest.approx(0.2)
    assert row["wins_b"] == 3


def test_only_explainers_of_the_same_simulator_are_paired() -> None:
    scores = frame(
        score_rows("a", range(4), [0.1, 0.2, 0.3, 0.4]),
        score_rows("b", range(4), [0.2, 0.2, 0.2, 0.2]),
        score_rows("c", range(4), [0.3, 0.3, 0.3, 0.3]),
        score_rows("a", range(4), [0.5] * 4, simulator="gpt"),
    )
    result = compare_explainers(scores, n_boot=100)
    pairs = result.select("simulator", "explainer_a", "explainer_b").rows()
    assert pairs == [("lexical", "a", "b"), ("lexical", "a", "c"), ("lexical", "b", "c")]


def test_neurons_are_paired_by_layer_too() -> None:
    scores = frame(
        score_rows("a", range(3), [0.5, 0.5, 0.5], layer=0),
        score_rows("b", range(3), [0.1, 0.1, 0.1], layer=1),
    )
    row = compare_explainers(scores, n_boot=100).row(0, named=True)
    assert row["shared"] == 0 and row["compared"] == 0
    assert row["mean_diff"] is None and math.isnan(row["ci_low"])


def test_bootstrap_is_seeded_and_matches_the_normal_interval() -> None:
    rng = np.random.default_rng(1)
    n = 400
    a = rng.uniform(0, 1, n)
    b = a - 0.1 + rng.normal(0, 0.2, n)
    scores = frame(score_rows("a", range(n), a.tolist()), score_rows("b", range(n), b.tolist()))
    first = compare_explainers(scores, seed=3)
    assert first.equals(compare_explainers(scores, seed=3))
    assert not first.equals(compare_explainers(scores, seed=4))
    row = first.row(0, named=True)
    diffs = a - b
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(n)
    assert row["ci_low"] == pytest.approx(diffs.mean() - half, abs=0.15 * half)
    assert row["ci_high"] == pytest.approx(diffs.mean() + half, abs=0.15 * half)


def test_bootstrap_interval_of_one_value_is_that_value() -> None:
    assert bootstrap_mean_interval(np.array([0.25]), n_boot=50, seed=0) == (0.25, 0.25)


def test_format_comparison_lists_every_pair() -> None:
    scores = frame(
        score_rows("a", range(5), [0.5, 0.6, 0.7, 0.8, 0.9]),
        score_rows("b", range(5), [0.1, 0.2, 0.3, 0.4, 0.5]),
    )
    text = format_comparison(compare_explainers(scores, n_boot=100))
    assert "a@a-has" in text and "b@b-has" in text
    assert "+0.400" in text  # the mean difference
    assert " 5/5 " in text
    assert "nothing to compare" in format_comparison(compare_explainers(frame([])))
