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


def unscored_neurons(
    scores: pl.DataFrame,
    explanations: pl.DataFrame,
    simulations: pl.DataFrame,
    max_error_fraction: float,
) -> list[str]:
    """Every usable explanation is scored, but for neurons whose simulations all failed, and
    those may be no more than `max_error_fraction` of the explained neurons (the rule that
    fails a stage on its error rows)."""
    key = ["layer", "neuron", "explainer"]
    usable = explanations.filter(pl.col("error").is_null()).select(key).unique()
    unscored = usable.join(scores.select(key).unique(), on=key, how="anti")
    if unscored.is_empty():
        return []
    failed = simulations.filter(pl.col("error").is_not_null()).select(key).unique()
    unexplained = unscored.join(failed, on=key, how="anti")
    problems = []
    if unexplained.height:
        problems += _listed(
            unexplained, "usable explanations have no score and no failed simulation"
        )
    if unscored.height > max_error_fraction * usable.height:
        problems.append(
            f"{unscored.height} of {usable.height} explained neurons are unscored because their "
            f"simulations failed, more than max_error_fraction = {max_error_fraction:.0%}"
        )
    return problems


def short_of_unigram(trained: pl.DataFrame, min_margin: float) -> list[str]:
    """Every trained model's held-out loss lies at least `min_margin` nats under the unigram
    baseline's (TRAINED_MODEL_SCHEMA rows): a model that has not learned more than token
    frequencies is not worth explaining."""
    short = trained.filter(pl.col("heldout_loss") > pl.col("unigram_loss") - min_margin)
    return [
        f"{row['model']}: held-out loss {row['heldout_loss']:.3f} is not {min_margin} under the "
        f"unigram baseline's {row['unigram_loss']:.3f}; train longer (steps) or check the data"
        for row in short.iter_rows(named=True)
    ]


def unmatched_parameters(trained: pl.DataFrame, tolerance: float) -> list[str]:
    """The trained models' parameter counts lie within `tolerance` (a share) of each other."""
    low, high = trained["parameters"].min(), trained["parameters"].max()
    if high <= low * (1 + tolerance):
        return []
    counts = ", ".join(f"{m} {p:,}" for m, p in trained.select("model", "parameters").rows())
    return [f"parameter counts differ by more than {tolerance:.0%}: {counts}"]
