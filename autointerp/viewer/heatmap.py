"""Token heatmaps as HTML: one escaped span per token, shaded by its true activation and
underlined by the simulated one, in a few bytes per token (a neuron page shows thousands).

Shading is quantized to nine steps (classes a1–a9 for positive activations over the neuron's
largest, n1–n9 for negative ones, s1–s9 for simulated activations over 10); the exact values ride
on the container as data attributes, which static/heatmap.js shows on hover.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from markupsafe import Markup

from autointerp.viewer.text import visible_token

STEPS = 9


@lru_cache(maxsize=1 << 16)
def _token(token: str) -> str:
    """A token's text, made visible and escaped: tokens repeat, so each is done once."""
    return html.escape(visible_token(token))


@lru_cache(maxsize=512)
def _open_tag(level: int, simulated: int, missing: bool) -> str:
    names = [f"a{level}" if level > 0 else f"n{-level}" if level < 0 else ""]
    names += [f"s{simulated}" if simulated > 0 else "", "m" if missing else ""]
    joined = " ".join(name for name in names if name)
    return f'<span class="{joined}">' if joined else "<span>"


def heatmap(
    tokens: Sequence[str],
    activations: Sequence[float],
    scale: float,
    simulated: Sequence[float | None] | None = None,
    missing: Sequence[int] = (),
) -> Markup:
    """The tokens of one excerpt; `scale` is the activation drawn at full strength."""
    n = min(len(tokens), len(activations))
    acts = np.asarray(activations[:n], dtype=np.float64)
    levels = np.zeros(n, dtype=np.int64)
    if scale > 0:
        levels = np.clip(np.rint(acts / scale * STEPS), -STEPS, STEPS).astype(np.int64)
    sims = np.zeros(n, dtype=np.int64)
    data = f' data-act="{_numbers(acts.tolist())}"'
    if simulated is not None:
        values = np.asarray([np.nan if v is None else v for v in simulated[:n]], dtype=np.float64)
        steps = np.clip(np.rint(np.nan_to_num(values) / 10 * STEPS), 0, STEPS).astype(np.int64)
        sims[: len(steps)] = steps
        data += f' data-sim="{_numbers(list(simulated))}"'
    gaps = set(missing)
    spans = [
        f"{_open_tag(level, sim, i in gaps)}{_token(token)}</span>"
        for i, (token, level, sim) in enumerate(
            zip(tokens[:n], levels.tolist(), sims.tolist(), strict=True)
        )
    ]
    return Markup(f'<div class="tokens"{data}>{"".join(spans)}</div>')


def _numbers(values: Sequence[float | None]) -> str:
    return ",".join("" if v is None else f"{v:.3g}" for v in values)
