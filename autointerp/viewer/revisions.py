"""Revision rounds as the viewer shows them: which rounds exist, per layer who was revised and
what it changed, and one neuron's rounds with their counterexamples."""

from __future__ import annotations

import polars as pl

from autointerp.lineage.chain import RevisionRound
from autointerp.lineage.read import COUNTEREXAMPLE_COLUMNS, revision_round
from autointerp.viewer.tables import ModelTables

REVISED_COLUMNS = [
    "neuron",
    "explainer",
    "previous_explanation",
    "revised_explanation",
    "kept",
    "previous_score",
    "candidate_score",
    "reported_score",
    "previous_reported_score",
    "error",
]


def rounds(tables: ModelTables) -> list[int]:
    """The rounds materialized: 1, 2, ... up to the first missing revised_explanations_rK."""
    found = []
    while tables.exists(f"revised_explanations_r{len(found) + 1}"):
        found.append(len(found) + 1)
    return found


def revision_tables(tables: ModelTables) -> list[str]:
    """The tables that revision rounds are read from."""
    return [
        f"{name}_r{k}"
        for k in rounds(tables)
        for name in ("revised_explanations", "counterexamples")
    ]


def layer_revisions(tables: ModelTables, layer: int) -> pl.DataFrame:
    """Per revised neuron and explainer: the rounds it went through, those whose revision was
    kept, and the change of its test score from before the first round to after the last."""
    frames = [
        tables.frame(f"revised_explanations_r{k}", REVISED_COLUMNS, layer=layer).with_columns(
            round=pl.lit(k, pl.Int32)
        )
        for k in rounds(tables)
    ]
    schema = {"neuron": pl.Int32, "explainer": pl.Utf8, "rounds": pl.UInt32}
    if not frames:
        return pl.DataFrame(schema={**schema, "kept_rounds": pl.List(pl.Int32)})
    return (
        pl.concat(frames, how="diagonal_relaxed")
        .sort("round")
        .group_by("neuron", "explainer")
        .agg(
            rounds=pl.len(),
            kept_rounds=pl.col("round").filter(pl.col("kept")),
            change=pl.col("reported_score").last() - pl.col("previous_reported_score").first(),
        )
    )


def neuron_rounds(tables: ModelTables, layer: int, neuron: int) -> list[RevisionRound]:
    """The neuron's rounds, each with its counterexamples (tokens and both activations)."""
    found = []
    for k in rounds(tables):
        revised = tables.frame(f"revised_explanations_r{k}", REVISED_COLUMNS, layer=layer)
        revised = revised.filter(pl.col("neuron") == neuron)
        if revised.is_empty():
            continue
        counter = tables.rows(f"counterexamples_r{k}", COUNTEREXAMPLE_COLUMNS, layer, neuron)
        found += revision_round(k, revised, counter)
    return found
