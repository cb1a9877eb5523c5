"""A histogram of scores as a small SVG image: numbers only, so it can be shown anywhere (the
Dagster UI renders it from a data URI) without carrying any corpus or LLM text."""

from __future__ import annotations

import base64
from collections.abc import Sequence

BINS = 20
WIDTH, HEIGHT, MARGIN = 400, 160, 24


def histogram(values: Sequence[float], bins: int = BINS, low: float = -1.0, high: float = 1.0):
    """Counts of `values` in `bins` equal bins over [low, high] (the top edge in the last bin);
    values outside the range or not finite are left out."""
    counts = [0] * bins
    for value in values:
        if value is None or not low <= value <= high:
            continue
        counts[min(int((value - low) / (high - low) * bins), bins - 1)] += 1
    return counts


def histogram_svg(counts: Sequence[int], low: float = -1.0, high: float = 1.0) -> str:
    """Bars of `counts` over [low, high], the axis labelled at both ends and at 0.8."""
    top = max(counts, default=0) or 1
    width = (WIDTH - 2 * MARGIN) / max(len(counts), 1)
    plot = HEIGHT - 2 * MARGIN
    bars = "".join(
        f'<rect x="{MARGIN + i * width:.1f}" y="{MARGIN + plot - plot * c / top:.1f}" '
        f'width="{max(width - 1, 1):.1f}" height="{plot * c / top:.1f}" fill="#4f43dd"/>'
        for i, c in enumerate(counts)
    )

    def x(value: float) -> float:
        return MARGIN + (value - low) / (high - low) * (WIDTH - 2 * MARGIN)

    labels = "".join(
        f'<text x="{x(v):.1f}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">{v:g}</text>'
        for v in (low, 0.0, 0.8, high)
    )
    marker = (
        f'<line x1="{x(0.8):.1f}" x2="{x(0.8):.1f}" y1="{MARGIN}" y2="{MARGIN + plot}" '
        'stroke="#d33" stroke-dasharray="3,3"/>'
    )
    peak = f'<text x="{MARGIN}" y="{MARGIN - 6}" font-size="11">max {max(counts, default=0)}</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif">{bars}{marker}{labels}{peak}</svg>'
    )


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
