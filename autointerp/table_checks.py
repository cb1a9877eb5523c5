"""Data checks on the tables the stages write (run as Dagster asset checks; the ones protecting
downstream stages block them). Each returns the problems found, described for a person."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

MAX_LISTED = 5


def _listed(frame: pl.DataFrame, what: str) -> list[str]:
    rows = frame.select("layer", "neuron").head(MAX_LISTED).rows()
    more = f" and {frame.height - MAX_LISTED} more" if frame.height > MAX_LISTED else ""
    return [f"{frame.height} {what}: {', '.join(f'{layer}/{n}' for layer, n in rows)}{more}"]


def empty_explanations(explanations: pl.DataFrame) -> list[str]:
    """Rows without an error must hold a non-empty explanation."""
    bad = explanations.filter(
        pl.col("error").is_null()
        & (pl.col("explanation").is_null() | (pl.col("explanation").str.strip_chars() == ""))
    )
    return _listed(bad, "rows without an error have an empty explanation") if bad.height else []


def missing_neurons(
    frame: pl.DataFrame, expected: Mapping[str, Sequence[tuple[int, int]]], column: str
) -> list[str]:
    """Every (layer, neuron) expected for each profile (values of `column`) has a row."""
    problems = []
    for profile, neurons in expected.items():
        wanted = pl.DataFrame(
            list(neurons), schema={"layer": pl.Int32, "neuron": pl.Int32}, orient="row"
        )
        have = frame.filter(pl.col(column) == profile).select(
            pl.col("layer").cast(pl.Int32), pl.col("neuron").cast(pl.Int32)
        )
        absent = wanted.join(have.unique(), on=["layer", "neuron"], how="anti")
        if absent.height:
            problems += _listed(absent, f"neurons have no row for {column} {profile!r}")
    return problems


def out_of_range_scores(scores: pl.DataFrame) -> list[str]:
    """Correlations lie in [-1, 1], or are NaN with a reason."""
    value = pl.col("ev_correlation")
    outside = scores.filter(value.is_not_nan() & ((value < -1 - 1e-9) | (value > 1 + 1e-9)))
    unexplained = scores.filter(value.is_nan() & pl.col("undefined_reason").is_null())
    problems = _listed(outside, "scores outside [-1, 1]") if outside.height else []
    if unexplained.height:
        problems += _listed(unexplained, "NaN scores without a reason")
    return problems
