"""Which of a neuron's explanation samples counts: one rule for every summary, comparison and
revision round.

An explainer writes n samples per neuron; the one that counts is the sample with the highest
ev_correlation (top_and_random) on the valid split, undefined scores last and ties to the lowest
sample. A report on the valid split itself chooses on the calibration split instead, so that no
split both picks a sample and reports it: the best of n noisy draws on the split reported would
overstate an explanation's quality.

A neuron and profile pair scored on no row of the choosing split (an imported simulator's scores
hold only the published test split) counts its first sample: chosen by no score, it overstates
nothing.
"""

from __future__ import annotations

import polars as pl

PROFILE = ("explainer", "explainer_hash", "simulator", "simulator_hash")
NEURON_KEY = ("layer", "neuron", *PROFILE)
SELECTED_ON = "top_and_random"


def selection_split(reported: str) -> str:
    """The split that picks the sample when `reported` is the split a score is reported on."""
    return "calibration" if reported == "valid" else "valid"


def chosen_samples(scores: pl.DataFrame, *, reported: str = "test") -> pl.DataFrame:
    """Per neuron and profile pair (NEURON_KEY), the sample that counts for a report on
    `reported`, with its `selection_score` (NaN as null) on the split that chose it."""
    chooser = selection_split(reported)
    rows = scores.filter(pl.col("scored_on") == SELECTED_ON).select(
        *NEURON_KEY,
        "sample",
        pl.when(pl.col("split") == chooser)
        .then(pl.col("ev_correlation").fill_nan(None))
        .alias("selection_score"),
        (pl.col("split") == chooser).alias("on_chooser"),
    )
    choosing = rows.group_by(NEURON_KEY).agg(pl.col("on_chooser").any().alias("choosing"))
    return (
        rows.join(choosing, on=list(NEURON_KEY))
        .filter(pl.col("on_chooser") | ~pl.col("choosing"))
        .sort("selection_score", "sample", descending=[True, False], nulls_last=True)
        .group_by(NEURON_KEY, maintain_order=True)
        .first()
        .drop("on_chooser", "choosing")
    )


def best_samples(
    scores: pl.DataFrame, *, split: str = "test", scored_on: str = "top_and_random"
) -> pl.DataFrame:
    """One row per neuron and profile pair (NEURON_KEY): the chosen sample (`chosen_samples`)
    with its ev_correlation on `split` and `scored_on` as `score` (NaN as null). A neuron whose
    chosen sample has no row of `split` and `scored_on` is left out."""
    reported = scores.filter((pl.col("split") == split) & (pl.col("scored_on") == scored_on))
    return chosen_samples(scores, reported=split).join(
        reported.select(
            *NEURON_KEY, "sample", pl.col("ev_correlation").fill_nan(None).alias("score")
        ),
        on=[*NEURON_KEY, "sample"],
        how="inner",
    )
