"""The layer page as data: every neuron of a layer with its chosen explanation per explainer and
simulator pair, its score, its largest activation and whether it ever fires; sorted, filtered and
paged as the query asks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import polars as pl

from autointerp.activations.data_model import is_dead
from autointerp.errors import InputError
from autointerp.viewer.overview import best_scores
from autointerp.viewer.revisions import layer_revisions, revision_tables
from autointerp.viewer.tables import ModelTables

PAGE_SIZE = 100
SORTS = ("neuron", "score", "max_activation", "explainer")
STATUSES = ("all", "live", "dead", "revised")
EXPLANATION_COLUMNS = ["neuron", "explainer", "explainer_hash", "sample", "explanation", "error"]


@dataclass(frozen=True)
class LayerQuery:
    """What the layer table shows: a sort key and direction, a text the explanation contains
    (case-insensitive), one explainer, a status, and a page (from 1). `page_size` None: all."""

    sort: str = "neuron"
    descending: bool = False
    text: str = ""
    explainer: str = ""
    status: str = "all"
    page: int = 1
    page_size: int | None = PAGE_SIZE

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> LayerQuery:
        """From a URL's query; a bad value is an InputError naming the good ones."""
        sort = params.get("sort", "neuron")
        status = params.get("status", "all")
        order = params.get("order", "desc" if sort == "score" else "asc")
        if sort not in SORTS:
            raise InputError(f"sort={sort!r}: sort by one of {', '.join(SORTS)}")
        if status not in STATUSES:
            raise InputError(f"status={status!r}: one of {', '.join(STATUSES)}")
        if order not in ("asc", "desc"):
            raise InputError(f"order={order!r}: asc or desc")
        try:
            page = int(params.get("page", "1"))
        except ValueError:
            raise InputError(f"page={params.get('page')!r}: a page number") from None
        return cls(
            sort=sort,
            descending=order == "desc",
            text=params.get("q", "").strip(),
            explainer=params.get("explainer", ""),
            status=status,
            page=max(page, 1),
        )

    def params(self) -> dict[str, str]:
        """The query as URL parameters, defaults left out."""
        default = "desc" if self.sort == "score" else "asc"
        order = "desc" if self.descending else "asc"
        found = {
            "sort": self.sort if self.sort != "neuron" else "",
            "order": order if order != default else "",
            "q": self.text,
            "explainer": self.explainer,
            "status": self.status if self.status != "all" else "",
            "page": str(self.page) if self.page != 1 else "",
        }
        return {key: value for key, value in found.items() if value}

    def sorted_by(self, key: str) -> LayerQuery:
        """Sorted by `key` from the first page: the other way round when already sorted by it,
        else the key's own way (scores best first, the rest ascending)."""
        descending = not self.descending if key == self.sort else key == "score"
        return replace(self, sort=key, descending=descending, page=1)

    def at_page(self, page: int) -> LayerQuery:
        return replace(self, page=page)


@dataclass(frozen=True)
class LayerPage:
    layer: int
    neurons: int  # in the layer
    dead: int
    explainers: list[str]
    rows: pl.DataFrame  # this page's rows of `layer_table`
    matching: int  # rows the filter keeps, over every page
    pages: int
    query: LayerQuery
    scores: pl.DataFrame  # the layer's chosen scores (for its histogram)


def layer_table(tables: ModelTables, layer: int) -> pl.DataFrame:
    """One row per neuron and explainer/simulator pair (one row for a neuron nothing explained):
    neuron, max_activation, dead, explainer, simulator, pair, sample, score (test,
    top_and_random), valid, explanation, error, rounds, kept_rounds, change."""
    records = tables.frame("neuron_records", ["neuron", "max_activation"], layer=layer)
    explanations = tables.frame("explanations", EXPLANATION_COLUMNS, layer=layer)
    best = best_scores(tables, layer).drop("layer")
    chosen = best.join(
        explanations, on=["neuron", "explainer", "explainer_hash", "sample"], how="left"
    )
    # Explained but never scored (every sample an error): shown with the error.
    unscored = (
        explanations.join(best, on=["neuron", "explainer"], how="anti")
        .sort("sample")
        .unique(["neuron", "explainer"], keep="first")
    )
    rows = pl.concat([chosen, unscored], how="diagonal_relaxed")
    return (
        records.join(rows, on="neuron", how="left")
        .join(layer_revisions(tables, layer), on=["neuron", "explainer"], how="left")
        .with_columns(dead=is_dead(pl.col("max_activation")))
        .sort("neuron", "explainer", nulls_last=True)
    )


def layer_page(tables: ModelTables, layer: int, query: LayerQuery) -> LayerPage:
    read = ["neuron_records", "scores", "explanations", *revision_tables(tables)]
    table = tables.derived(f"layer_table {layer}", read, lambda: layer_table(tables, layer))
    kept = table
    if query.text:
        kept = kept.filter(
            pl.col("explanation").str.to_lowercase().str.contains(query.text.lower(), literal=True)
        )
    if query.explainer:
        kept = kept.filter(pl.col("explainer") == query.explainer)
    if query.status != "all":
        kept = kept.filter(
            {
                "live": ~pl.col("dead"),
                "dead": pl.col("dead"),
                "revised": pl.col("rounds").is_not_null(),
            }[query.status]
        )
    kept = kept.sort([query.sort, "neuron"], descending=[query.descending, False], nulls_last=True)
    size = query.page_size or max(kept.height, 1)
    pages = max(1, math.ceil(kept.height / size))
    page = min(query.page, pages)
    records = table.unique("neuron")
    return LayerPage(
        layer=layer,
        neurons=records.height,
        dead=int(records["dead"].sum()),
        explainers=sorted(table["explainer"].drop_nulls().unique().to_list()),
        rows=kept.slice((page - 1) * size, size),
        matching=kept.height,
        pages=pages,
        query=replace(query, page=page),
        scores=table.filter(pl.col("score").is_not_null()),
    )
