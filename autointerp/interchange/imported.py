"""What the explain, simulate and score stages write for an imported dataset's own profiles (both
named `imported:<model>`), from its imported_explanations table: no LLM is called.

- explanations: the published explanations, one sample per entry of a neuron's
  `scored_explanations` (an empty one is an error row);
- simulations: the published simulations of them, on the excerpts they were scored on, as the
  split `test` (the held-out records the publication reports), method `imported`;
- scores: the stored scores, exactly as published, as `top_and_random` of that split: pooled over
  the same excerpts, never recomputed. Any simulator of this project simulates and scores the
  same explanations beside them.
"""

from __future__ import annotations

import polars as pl

from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.storage.schemas import (
    EXPLANATIONS_SCHEMA,
    SCORE_KEYS,
    SCORES_SCHEMA,
    SIMULATIONS_SCHEMA,
)

IMPORTED_SPLIT = "test"
IMPORTED_METHOD = "imported"
EMPTY = "the imported explanation is empty"
UNDEFINED = "undefined in the imported file"
_KEY = ["layer", "neuron", "sample"]


def imported_explanations(profile: ExplainerProfile, imported: pl.DataFrame) -> pl.DataFrame:
    """The explanations rows (EXPLANATIONS_SCHEMA) of the imported explainer `profile`."""
    blank = pl.col("explanation").str.strip_chars() == ""
    return (
        imported.select(
            *_KEY,
            explainer=pl.lit(profile.name),
            explainer_hash=pl.lit(profile.hash),
            explanation=pl.when(blank).then(None).otherwise(pl.col("explanation")),
            prompt_hash=pl.lit(None, pl.Utf8),
            call_ids=pl.lit([], pl.List(pl.Utf8)),
            error=pl.when(blank).then(pl.lit(EMPTY)).otherwise(None),
        )
        .select(*EXPLANATIONS_SCHEMA)
        .cast(EXPLANATIONS_SCHEMA)
        .sort(*_KEY)
    )


def imported_simulations(
    simulator: SimulatorProfile, explanations: pl.DataFrame, imported: pl.DataFrame
) -> pl.DataFrame:
    """The simulations rows (SIMULATIONS_SCHEMA) of the imported simulator: the published
    simulations of the usable explanations of the explainer of the same name."""
    usable = explanations.filter(
        (pl.col("explainer") == simulator.name)
        & pl.col("error").is_null()
        & pl.col("explanation").is_not_null()
    ).select(*_KEY, "explainer", "explainer_hash")
    return (
        imported.join(usable, on=_KEY, how="inner")
        .select(
            *_KEY,
            "explainer",
            "explainer_hash",
            excerpt_id="excerpt_ids",
            kind="kinds",
            true_activations="true_activations",
            expected_activations="expected_activations",
        )
        .explode("excerpt_id", "kind", "true_activations", "expected_activations")
        .drop_nulls("excerpt_id")  # an explanation scored on no excerpt
        .with_columns(
            simulator=pl.lit(simulator.name),
            simulator_hash=pl.lit(simulator.hash),
            split=pl.lit(IMPORTED_SPLIT),
            method=pl.lit(IMPORTED_METHOD),
            missing_positions=pl.col("expected_activations").list.eval(
                pl.element().is_null().arg_true()
            ),
            sampled_positions=pl.lit([], pl.List(pl.Int32)),
            folded_positions=pl.lit([], pl.List(pl.Int32)),
            truncated=pl.lit(False),
            call_ids=pl.lit([], pl.List(pl.Utf8)),
            error=pl.lit(None, pl.Utf8),
        )
        .select(*SIMULATIONS_SCHEMA)
        .cast(SIMULATIONS_SCHEMA)
    )


def imported_scores(simulations: pl.DataFrame, imported: pl.DataFrame) -> pl.DataFrame:
    """The scores rows (SCORES_SCHEMA) of the imported simulator's `simulations`: the stored
    scores, over the excerpts they pooled."""
    pooled = simulations.group_by(SCORE_KEYS).agg(
        tokens=pl.col("expected_activations").list.len().sum()
        - pl.col("missing_positions").list.len().sum(),
        missing_tokens=pl.col("missing_positions").list.len().sum(),
    )
    stored = imported.select(
        *_KEY,
        "excerpt_ids",
        "ev_correlation",
        "rsquared",
        "absolute_dev_explained",
        "calibrated",
    )
    return (
        pooled.join(stored, on=_KEY, how="inner")
        .with_columns(
            scored_on=pl.lit("top_and_random"),
            split=pl.lit(IMPORTED_SPLIT),
            undefined_reason=pl.when(pl.col("ev_correlation").is_nan())
            .then(pl.lit(UNDEFINED))
            .otherwise(None),
        )
        .select(*SCORES_SCHEMA)
        .cast(SCORES_SCHEMA)
        .sort(*SCORE_KEYS)
    )
