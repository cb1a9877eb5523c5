"""The model overview as data: per layer, its neurons and the distribution of their scores; per
explainer and simulator pair, the model-wide summary beside the shuffled-explanation floor; the
revision rounds and the explainer comparison where those tables exist."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from autointerp.activations.data_model import is_dead
from autointerp.score.selection import NEURON_KEY, SELECTED_ON, best_samples, selection_split
from autointerp.score.summary import REPORTED_SPLIT
from autointerp.viewer.tables import ModelTables

BIN_WIDTH = 0.1  # score histogram bins over [-1, 1]
# The scores rows every overview and layer reads: the reported split and the one samples are
# chosen on (`score.selection`), of top_and_random, nothing else.
SELECTION_COLUMNS = [*NEURON_KEY, "sample", "split", "scored_on", "ev_correlation"]
SELECTION_ROWS = pl.col("split").is_in([REPORTED_SPLIT, selection_split(REPORTED_SPLIT)]) & (
    pl.col("scored_on") == SELECTED_ON
)


def pair_label() -> pl.Expr:
    """How an explainer and simulator pair is named on every page."""
    return pl.format("{} → {}", "explainer", "simulator").alias("pair")


@dataclass(frozen=True)
class ModelOverview:
    model: str
    num_layers: int
    layers: pl.DataFrame  # layer, neurons, dead
    best: pl.DataFrame  # per neuron and pair: the chosen sample's test score (`best_samples`)
    histogram: pl.DataFrame  # layer, pair, bin_start, bin_end, neurons
    summary: pl.DataFrame | None  # score_summary, with `pair`; None when not materialized
    pairs: pl.DataFrame | None  # score_summary over every layer, per pair
    revisions: pl.DataFrame | None  # revision_summary
    comparison: pl.DataFrame | None  # compare
    versions: dict[str, int | None]

    def by_layer(self) -> list[dict]:
        """Per layer with records: its neurons, dead ones, and each pair's summary row."""
        rows: dict[int, list[dict]] = {}
        if self.summary is not None:
            for row in self.summary.iter_rows(named=True):
                rows.setdefault(row["layer"], []).append(row)
        return [
            {**layer, "pairs": rows.get(layer["layer"], [])}
            for layer in self.layers.iter_rows(named=True)
        ]


def best_scores(tables: ModelTables, layer: int | None = None) -> pl.DataFrame:
    """Each neuron's chosen sample per pair with its test score (`best_samples`), of one layer
    or of every layer; computed once per scores version."""

    def compute() -> pl.DataFrame:
        rows = tables.frame(
            "scores", SELECTION_COLUMNS, layer=layer, where=SELECTION_ROWS, label="selection"
        )
        return best_samples(rows).with_columns(pair_label())

    return tables.derived(f"best_scores {layer}", ["scores"], compute)


def histogram(best: pl.DataFrame) -> pl.DataFrame:
    """Neurons per layer, pair and score bin (undefined scores left out)."""
    start = (pl.col("score") / BIN_WIDTH).floor().clip(-1 / BIN_WIDTH, 1 / BIN_WIDTH - 1)
    return (
        best.drop_nulls("score")
        .with_columns(bin_start=(start * BIN_WIDTH).round(2))
        .group_by("layer", "pair", "bin_start")
        .agg(neurons=pl.len())
        .with_columns(bin_end=(pl.col("bin_start") + BIN_WIDTH).round(2))
        .sort("layer", "pair", "bin_start")
    )


def model_overview(tables: ModelTables, model: str, num_layers: int) -> ModelOverview:
    """Reads the scores' reported and selection rows of every layer, the records' maxima, and
    the summary tables; each is cached per table version."""
    records = tables.frame("neuron_records", ["layer", "neuron", "max_activation"])
    layers = (
        records.group_by("layer")
        .agg(neurons=pl.len(), dead=is_dead(pl.col("max_activation")).sum())
        .sort("layer")
    )
    best = best_scores(tables)
    summary = optional(tables, "score_summary")
    pairs = None
    if summary is not None:
        summary = summary.with_columns(pair_label()).sort("layer", "pair")
        pairs = pair_totals(summary)
    return ModelOverview(
        model=model,
        num_layers=num_layers,
        layers=layers,
        best=best,
        histogram=histogram(best),
        summary=summary,
        pairs=pairs,
        revisions=optional(tables, "revision_summary"),
        comparison=optional(tables, "compare"),
        versions={
            name: tables.version(name)
            for name in ("neuron_records", "scores", "score_summary", "revision_summary")
        },
    )


def pair_totals(summary: pl.DataFrame) -> pl.DataFrame:
    """score_summary's layers added up per pair. A mean over layers weighs each layer by the
    neurons it was taken over (`scored`; `shuffled_neurons` for the chance floor), and leaves out
    layers where it is undefined; the floor and the missing share appear where the summary has
    them."""

    def weighted(column: str, weight: str) -> pl.Expr:
        known = pl.col(column).is_not_null() & pl.col(column).is_not_nan()
        total = pl.col(weight).filter(known).sum()
        mean = (pl.col(column) * pl.col(weight)).filter(known).sum() / total
        return pl.when(total > 0).then(mean).otherwise(None).alias(column)

    weights = {"mean": "scored", "shuffled_mean": "shuffled_neurons", "missing_share": "neurons"}
    means = [
        weighted(column, weight if weight in summary.columns else "scored")
        for column, weight in weights.items()
        if column in summary.columns
    ]
    return (
        summary.group_by("pair", "explainer", "simulator")
        .agg(
            pl.len().alias("layers"),
            pl.col("neurons").sum(),
            pl.col("scored").sum(),
            pl.col("count_ge_0_8").sum(),
            *means,
        )
        .sort("pair")
    )


def optional(tables: ModelTables, table: str) -> pl.DataFrame | None:
    """An unpartitioned summary table, or None when it has not been materialized."""
    if not tables.exists(table):
        return None
    return tables.frame(table, list(tables.snapshot(table).schema))
