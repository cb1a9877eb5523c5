"""The per-layer summary of the scores table (`score_summary`)."""

from __future__ import annotations

import polars as pl

from autointerp.errors import error_kind
from autointerp.score.floor import floor_summary
from autointerp.score.selection import NEURON_KEY, PROFILE, chosen_samples

GOOD_SCORE = 0.8  # the publication's bar: "more than 1,000 explanations scored at least 0.8"
REPORTED_SPLIT = "test"


def dropped_neurons(
    summarized: pl.DataFrame, explanations: pl.DataFrame, simulations: pl.DataFrame
) -> pl.DataFrame:
    """Per layer, explainer and simulator: how many neurons explained (an explanation row, failed
    or not) are missing from the summary (`summarized`, one row per neuron counted), and why,
    by kind, the most common first: the explanation failed, every test simulation failed, or
    the neuron has no test simulation at all."""
    key = ["layer", "neuron", "explainer"]
    profiles = simulations.select("layer", "explainer", "simulator").unique()
    candidates = explanations.select(key).unique().join(profiles, on=["layer", "explainer"])
    dropped = candidates.join(
        summarized.select(*key, "simulator").unique(), on=[*key, "simulator"], how="anti"
    )
    explain_error = explanations.group_by(key).agg(
        usable=pl.col("error").is_null().any(), explain_error=pl.col("error").drop_nulls().first()
    )
    test = simulations.filter(pl.col("split") == "test")
    simulate_error = test.group_by(*key, "simulator").agg(
        ok=pl.col("error").is_null().any(), simulate_error=pl.col("error").drop_nulls().first()
    )
    why = (
        dropped.join(explain_error, on=key, how="left")
        .join(simulate_error, on=[*key, "simulator"], how="left")
        .with_columns(
            why=pl.when(~pl.col("usable"))
            .then(pl.lit("explanation: ") + pl.col("explain_error"))
            .when(pl.col("ok").is_null())
            .then(pl.lit("no test simulation"))
            .when(~pl.col("ok"))
            .then(pl.lit("simulation: ") + pl.col("simulate_error"))
            .otherwise(pl.lit("no defined score"))
            .map_elements(error_kind, return_dtype=pl.Utf8)
        )
    )
    counted = why.group_by("layer", "explainer", "simulator", "why").len()
    return (
        counted.sort("len", "why", descending=[True, False])
        .group_by("layer", "explainer", "simulator", maintain_order=True)
        .agg(
            dropped=pl.col("len").sum().cast(pl.UInt32),
            dropped_why=pl.format("{} x {}", "why", "len").str.join("; "),
        )
    )


def score_summary(
    scores: pl.DataFrame,
    shuffled: pl.DataFrame | None = None,
    explanations: pl.DataFrame | None = None,
    simulations: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per layer, explainer and simulator, on top_and_random of the test split: how many neurons
    were scored, the mean, median and 90th percentile of their ev_correlation and the count at
    or above 0.8; beside them the chance floor (`shuffled_mean`, from the `shuffled` floor score
    rows, `score.floor`), the share of excerpt tokens the simulator left unanswered
    (`missing_share`), and the mean rsquared and absolute_dev_explained over the neurons whose
    predictions were calibrated to the activation scale (null where none were: on the 0–10 scale
    those numbers mean nothing).

    Each neuron counts once, with the sample chosen by the project's one rule (`score.selection`).
    `neurons` counts every neuron; `scored` those whose score is defined (not NaN), over which
    the statistics are taken. Given the explanations and simulations, `dropped` counts the
    explained neurons the summary leaves out and `dropped_why` says why (`dropped_neurons`):
    no neuron leaves the summary unsaid.
    """
    reported = scores.filter(
        (pl.col("split") == REPORTED_SPLIT) & (pl.col("scored_on") == "top_and_random")
    )
    chosen = chosen_samples(scores, reported=REPORTED_SPLIT).join(
        reported.with_columns(score=pl.col("ev_correlation").fill_nan(None)),
        on=[*NEURON_KEY, "sample"],
        how="inner",
    )
    calibrated = pl.col("calibrated")
    summary = (
        chosen.group_by("layer", *PROFILE)
        .agg(
            neurons=pl.len(),
            scored=pl.col("score").count(),
            mean=pl.col("score").mean(),
            median=pl.col("score").median(),
            p90=pl.col("score").quantile(0.9),
            count_ge_0_8=(pl.col("score") >= GOOD_SCORE).sum(),
            missing_share=pl.col("missing_tokens").sum()
            / (pl.col("tokens") + pl.col("missing_tokens")).sum(),
            mean_rsquared=pl.col("rsquared").filter(calibrated).fill_nan(None).mean(),
            mean_abs_dev_explained=pl.col("absolute_dev_explained")
            .filter(calibrated)
            .fill_nan(None)
            .mean(),
        )
        .sort("layer", *PROFILE)
    )
    floor = (
        floor_summary(shuffled)
        if shuffled is not None
        else pl.DataFrame(
            schema={
                **{key: summary.schema[key] for key in ("layer", *PROFILE)},
                "shuffled_mean": pl.Float64,
                "shuffled_neurons": pl.UInt32,
            }
        )
    )
    summary = summary.join(floor, on=["layer", *PROFILE], how="left")
    if explanations is None or simulations is None:
        return summary
    dropped = dropped_neurons(chosen, explanations, simulations)
    keys = ["layer", "explainer", "simulator"]
    return summary.join(dropped, on=keys, how="full", coalesce=True).with_columns(
        pl.col("neurons").fill_null(0), pl.col("dropped").fill_null(0)
    )
