"""Finding neurons by the words of their explanations, across layers."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from autointerp.viewer.overview import best_scores
from autointerp.viewer.tables import ModelTables

LIMIT = 200


@dataclass(frozen=True)
class Hit:
    layer: int
    neuron: int
    explainer: str
    explanation: str
    score: float | None
    parts: list[tuple[str, bool]]  # the explanation cut into pieces, True where it matched


def search_explanations(tables: ModelTables, text: str, limit: int = LIMIT) -> list[Hit]:
    """Explanations containing `text` (case-insensitive), every sample of every layer: those
    where it is a whole word first, then the rest, each by score (the chosen sample's test
    score), best first."""
    needle = text.strip().lower()
    if not needle:
        return []
    explanations = tables.frame(
        "explanations", ["layer", "neuron", "explainer", "explainer_hash", "sample", "explanation"]
    )
    lowered = pl.col("explanation").str.to_lowercase()
    found = explanations.filter(lowered.str.contains(needle, literal=True))
    if found.is_empty():
        return []
    scores = best_scores(tables).select(
        "layer", "neuron", "explainer", "explainer_hash", "sample", "score"
    )
    word = r"(^|\W)" + _escape(needle) + r"($|\W)"
    ranked = (
        found.join(
            scores, on=["layer", "neuron", "explainer", "explainer_hash", "sample"], how="left"
        )
        .with_columns(whole=lowered.str.contains(word))
        .sort(
            ["whole", "score", "layer", "neuron"],
            descending=[True, True, False, False],
            nulls_last=True,
        )
        .unique(["layer", "neuron", "explainer", "explanation"], keep="first", maintain_order=True)
        .head(limit)
    )
    return [
        Hit(
            layer=row["layer"],
            neuron=row["neuron"],
            explainer=row["explainer"],
            explanation=row["explanation"],
            score=row["score"],
            parts=highlight(row["explanation"], needle),
        )
        for row in ranked.iter_rows(named=True)
    ]


def highlight(text: str, needle: str) -> list[tuple[str, bool]]:
    """`text` cut where `needle` occurs (case-insensitive): (piece, matched) in order."""
    parts, lowered, start = [], text.lower(), 0
    if len(lowered) != len(text):  # lowercasing changed the length: offsets would not match
        return [(text, False)]
    while (found := lowered.find(needle, start)) >= 0:
        parts += [(text[start:found], False), (text[found : found + len(needle)], True)]
        start = found + len(needle)
    parts.append((text[start:], False))
    return [(piece, matched) for piece, matched in parts if piece]


def _escape(text: str) -> str:
    """`text` as a literal in a regular expression of Rust's regex syntax."""
    return "".join("\\" + c if c in r"\.+*?()|[]{}^$#&-~" else c for c in text)
