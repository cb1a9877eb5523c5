"""The score stage: simulations -> the `scores` table, and its per-layer summary.

For each explanation sample, simulator, split (calibration, valid, test) and scored set (top,
random, top_and_random), the scores of `autointerp.scoring` over all tokens of the set's
excerpts pooled into one vector (REFERENCE.md "Scoring"). Rows of the simulations table with an
error are left out, and `excerpt_ids` lists exactly the excerpts a score pooled.

NaN marks an undefined score: `ev_correlation` when the true or the expected activations are
constant over the set (a dead neuron, or an explanation that predicts the same value everywhere),
`rsquared` and `absolute_dev_explained` when the true activations are all zero.

With `calibrate`, a linear map from the simulator's 0–10 scale to the neuron's scale is fitted on
the calibration split (top_and_random) and applied to the valid and test splits, whose rows say
`calibrated`; the calibration split itself is scored uncalibrated (a fit scored on its own data
would flatter it). Correlation is unchanged up to its sign: a negative slope flips it, as scoring
the calibrated predictions should. A sample without a usable calibration split (none, or constant
predictions on it) stays uncalibrated.

The pooling is done on one flat token array sliced per set, so the per-set work is a few numpy
operations (measured: one SmolLM2 layer, 1,536 neurons × 30 excerpts × 64 tokens, in about a
second on a laptop-class core).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from autointerp.errors import InputError
from autointerp.scoring import IDENTITY_CALIBRATION, fit_linear_calibration, score_all

KEYS = ("layer", "neuron", "explainer", "explainer_hash", "simulator", "simulator_hash", "sample")
SCORED_ON = ("top", "random", "top_and_random")
CALIBRATION_SPLIT = "calibration"
GOOD_SCORE = 0.8  # the publication's bar: "more than 1,000 explanations scored at least 0.8"

SCORES_SCHEMA = {
    **{key: pl.Int32 if key in ("layer", "neuron", "sample") else pl.Utf8 for key in KEYS},
    "scored_on": pl.Utf8,  # top | random | top_and_random
    "split": pl.Utf8,  # calibration | valid | test
    "ev_correlation": pl.Float64,
    "rsquared": pl.Float64,
    "absolute_dev_explained": pl.Float64,
    "excerpt_ids": pl.List(pl.Int64),
    "calibrated": pl.Boolean,
}


def _flat(column: pl.Series) -> np.ndarray:
    return column.explode().to_numpy().astype(np.float64, copy=False)


def _sets(rows: pl.DataFrame) -> pl.DataFrame:
    """Each scored set as a contiguous range of rows [first, last] of the sorted simulations."""
    aggregates = {
        "first": pl.col("row").min(),
        "last": pl.col("row").max(),
        "excerpt_ids": pl.col("excerpt_id"),
    }
    by_kind = rows.group_by(*KEYS, "split", "kind", maintain_order=True).agg(**aggregates)
    both = rows.group_by(*KEYS, "split", maintain_order=True).agg(**aggregates)
    return pl.concat(
        [
            by_kind.rename({"kind": "scored_on"}),
            both.with_columns(scored_on=pl.lit("top_and_random")),
        ],
        how="diagonal",
    )


def score(simulations: pl.DataFrame, *, calibrate: bool) -> pl.DataFrame:
    """The `scores` table (SCORES_SCHEMA) of a `simulations` table; see the module docstring."""
    ok = simulations.filter(
        pl.col("error").is_null() & pl.col("expected_activations").is_not_null()
    ).sort(*KEYS, "split", "kind", "excerpt_id")
    lengths = ok["true_activations"].list.len()
    if (lengths != ok["expected_activations"].list.len()).any():
        raise InputError("simulations rows must have one expected activation per true one")
    # Sorted rows are contiguous per set, so a set is one slice of the flat token arrays.
    offsets = np.concatenate([[0], np.cumsum(lengths.to_numpy().astype(np.int64))])
    true, expected = _flat(ok["true_activations"]), _flat(ok["expected_activations"])
    sets = _sets(ok.select(*KEYS, "split", "kind", "excerpt_id").with_row_index("row"))

    calibrations = {}
    if calibrate:
        fitted = sets.filter(
            (pl.col("split") == CALIBRATION_SPLIT) & (pl.col("scored_on") == "top_and_random")
        )
        for *key, first, last in fitted.select(*KEYS, "first", "last").iter_rows():
            start, end = offsets[first], offsets[last + 1]
            calibrations[tuple(key)] = fit_linear_calibration(
                [true[start:end]], [expected[start:end]]
            )

    columns: dict[str, list] = {
        "ev_correlation": [],
        "rsquared": [],
        "absolute_dev_explained": [],
        "calibrated": [],
    }
    for *key, split, first, last in sets.select(*KEYS, "split", "first", "last").iter_rows():
        start, end = offsets[first], offsets[last + 1]
        predicted = [expected[start:end]]
        calibration = None if split == CALIBRATION_SPLIT else calibrations.get(tuple(key))
        if calibration is IDENTITY_CALIBRATION:  # constant predictions: nothing was fitted
            calibration = None
        if calibration is not None:
            predicted = calibration.apply(predicted)
        scores = score_all([true[start:end]], predicted)
        columns["ev_correlation"].append(scores.ev_correlation)
        columns["rsquared"].append(scores.rsquared)
        columns["absolute_dev_explained"].append(scores.absolute_dev_explained)
        columns["calibrated"].append(calibration is not None)
    return (
        sets.with_columns(**{name: pl.Series(values) for name, values in columns.items()})
        .select(*SCORES_SCHEMA)
        .cast(SCORES_SCHEMA)
        .sort(*KEYS, "split", "scored_on")
    )


def score_summary(scores: pl.DataFrame) -> pl.DataFrame:
    """Per layer, explainer and simulator: how many neurons were scored, and the mean, median
    and 90th percentile of their ev_correlation on top_and_random of the test split, with the
    count at or above 0.8.

    With several samples per neuron, each neuron counts once, with the sample that scored best
    on the valid split: choosing on test would report the best of n noisy draws, not an
    explanation's quality. `neurons` counts every neuron; `scored` those whose score is defined
    (not NaN), over which the statistics are taken.
    """
    profile = ["explainer", "explainer_hash", "simulator", "simulator_hash"]
    neuron_key = ["layer", "neuron", *profile]
    top_and_random = scores.filter(pl.col("scored_on") == "top_and_random")
    test = top_and_random.filter(pl.col("split") == "test").select(
        *neuron_key, "sample", pl.col("ev_correlation").fill_nan(None).alias("test")
    )
    valid = top_and_random.filter(pl.col("split") == "valid").select(
        *neuron_key, "sample", pl.col("ev_correlation").fill_nan(None).alias("valid")
    )
    best = (
        test.join(valid, on=[*neuron_key, "sample"], how="left")
        .sort("valid", "sample", descending=[True, False], nulls_last=True)
        .group_by(neuron_key, maintain_order=True)
        .first()
    )
    return (
        best.group_by("layer", *profile)
        .agg(
            neurons=pl.len(),
            scored=pl.col("test").count(),
            mean=pl.col("test").mean(),
            median=pl.col("test").median(),
            p90=pl.col("test").quantile(0.9),
            count_ge_0_8=(pl.col("test") >= GOOD_SCORE).sum(),
        )
        .sort("layer", *profile)
    )
