"""The scoring formulas: a simulation against the true activations (REFERENCE.md "Scoring").

Every score pools all tokens of all scored sequences into one vector before computing: the
aggregate over a split is a score of the concatenation, not a mean of per-sequence scores.
Undefined scores are NaN rather than an exception, so one degenerate neuron never stops a layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autointerp.errors import InputError

Sequences = Sequence[Sequence[float]]


def pool(true: Sequences, predicted: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate sequences into two float vectors, refusing sequences of unequal length."""
    if len(true) != len(predicted):
        raise InputError(f"{len(true)} true sequences but {len(predicted)} predicted ones")
    for i, (t, p) in enumerate(zip(true, predicted, strict=True)):
        if len(t) != len(p):
            raise InputError(f"sequence {i}: {len(t)} true activations but {len(p)} predicted")
    r = np.concatenate([np.asarray(t, dtype=np.float64) for t in true] or [np.empty(0)])
    p = np.concatenate([np.asarray(x, dtype=np.float64) for x in predicted] or [np.empty(0)])
    return r, p


def _vector(x: Sequence[float]) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def ev_correlation(true: Sequence[float], predicted: Sequence[float]) -> float:
    """Pearson correlation of true and predicted activations: the headline score.

    NaN when either side is constant (including fewer than two tokens), where correlation is
    undefined; constant is tested exactly (max == min) so rounding noise cannot make a flat
    prediction look informative.
    """
    r, p = _vector(true), _vector(predicted)
    if r.shape != p.shape:
        raise InputError(f"{r.size} true activations but {p.size} predicted")
    if r.size < 2 or np.ptp(r) == 0 or np.ptp(p) == 0:
        return float("nan")
    rc, pc = r - r.mean(), p - p.mean()
    return float(np.dot(rc, pc) / np.sqrt(np.dot(rc, rc) * np.dot(pc, pc)))


def rsquared(true: Sequence[float], predicted: Sequence[float]) -> float:
    """1 − mean((r − p)²) / mean(r²), uncentered as in the reference; NaN when mean(r²) = 0."""
    r, p = _vector(true), _vector(predicted)
    if r.shape != p.shape:
        raise InputError(f"{r.size} true activations but {p.size} predicted")
    denominator = float(np.mean(r**2)) if r.size else 0.0
    if denominator == 0:
        return float("nan")
    return 1.0 - float(np.mean((r - p) ** 2)) / denominator


def absolute_dev_explained(true: Sequence[float], predicted: Sequence[float]) -> float:
    """1 − mean|r − p| / mean|r|; NaN when mean|r| = 0."""
    r, p = _vector(true), _vector(predicted)
    if r.shape != p.shape:
        raise InputError(f"{r.size} true activations but {p.size} predicted")
    denominator = float(np.mean(np.abs(r))) if r.size else 0.0
    if denominator == 0:
        return float("nan")
    return 1.0 - float(np.mean(np.abs(r - p))) / denominator


@dataclass(frozen=True)
class Scores:
    """The three scores of one simulation over one set of sequences (pooled)."""

    ev_correlation: float
    rsquared: float
    absolute_dev_explained: float


def score_all(true: Sequences, predicted: Sequences) -> Scores:
    """All three scores over sequences pooled into one vector."""
    r, p = pool(true, predicted)
    return Scores(
        ev_correlation=ev_correlation(r, p),
        rsquared=rsquared(r, p),
        absolute_dev_explained=absolute_dev_explained(r, p),
    )
