"""The per-layer summary of the scores table (`score_summary`)."""

from __future__ import annotations

import polars as pl

from autointerp.score.selection import PROFILE, best_samples

GOOD_SCORE = 0.8  # the publication's bar: "more than 1,000 explanations scored at least 0.8"


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
