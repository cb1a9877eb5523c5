"""Which of a neuron's explanation samples counts: one rule for every summary and comparison."""

from __future__ import annotations

import polars as pl

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
