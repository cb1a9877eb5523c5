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

The tokens of all rows go into one flat array, sorted so that every set is one slice of it, and
each slice is scored by `autointerp.scoring` itself (one implementation of the formulas).
Measured (benchmarks/scoring.py, 2 CPU cores): one SmolLM2 layer, 1,536 neurons × 30 excerpts ×
64 tokens, scores in about 0.65 s (0.85 s calibrated), about 7 times reading its simulations
table from Delta.
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
    "undefined_reason": pl.Utf8,  # why ev_correlation is NaN; null when it is defined
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
        "undefined_reason": [],
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
        columns["undefined_reason"].append(
            undefined_reason(true[start:end], predicted[0])
            if np.isnan(scores.ev_correlation)
            else None
        )
    return (
        sets.with_columns(**{name: pl.Series(values) for name, values in columns.items()})
        .select(*SCORES_SCHEMA)
        .cast(SCORES_SCHEMA)
        .sort(*KEYS, "split", "scored_on")
    )


def undefined_reason(true: np.ndarray, predicted: np.ndarray) -> str:
    """Why a correlation is undefined (see the module docstring)."""
    if len(true) < 2:
        return "fewer than 2 tokens"
    if np.ptp(true) == 0:
        return "constant true activations"
    return "constant expected activations"


PROFILE = ("explainer", "explainer_hash", "simulator", "simulator_hash")
NEURON_KEY = ("layer", "neuron", *PROFILE)


def best_samples(
    scores: pl.DataFrame, *, split: str = "test", scored_on: str = "top_and_random"
) -> pl.DataFrame:
    """One row per neuron and profile pair (NEURON_KEY): the sample that scored best on the valid
    split (top_and_random), with its ev_correlation on `split` and `scored_on` as `score` and on
    the valid split as `valid` (NaN as null in both).

    Choosing on valid, not on the split reported, keeps the report honest: the best of n noisy
    draws on test would overstate an explanation's quality. A neuron without a row of `split`
    and `scored_on` is left out; ties and undefined valid scores go to the lowest sample.
    """
    reported = scores.filter((pl.col("split") == split) & (pl.col("scored_on") == scored_on))
    valid = scores.filter((pl.col("split") == "valid") & (pl.col("scored_on") == "top_and_random"))
    return (
        reported.select(
            *NEURON_KEY, "sample", pl.col("ev_correlation").fill_nan(None).alias("score")
        )
        .join(
            valid.select(
                *NEURON_KEY, "sample", pl.col("ev_correlation").fill_nan(None).alias("valid")
            ),
            on=[*NEURON_KEY, "sample"],
            how="left",
        )
        .sort("valid", "sample", descending=[True, False], nulls_last=True)
        .group_by(NEURON_KEY, maintain_order=True)
        .first()
    )


def score_summary(scores: pl.DataFrame) -> pl.DataFrame:
    """Per layer, explainer and simulator: how many neurons were scored, and the mean, median
    and 90th percentile of their ev_correlation on top_and_random of the test split, with the
    count at or above 0.8.

    With several samples per neuron, each neuron counts once, with the sample that scored best
    on the valid split (`best_samples`). `neurons` counts every neuron; `scored` those whose
    score is defined (not NaN), over which the statistics are taken.
    """
    return (
        best_samples(scores)
        .group_by("layer", *PROFILE)
        .agg(
            neurons=pl.len(),
            scored=pl.col("score").count(),
            mean=pl.col("score").mean(),
            median=pl.col("score").median(),
            p90=pl.col("score").quantile(0.9),
            count_ge_0_8=(pl.col("score") >= GOOD_SCORE).sum(),
        )
        .sort("layer", *PROFILE)
    )
