"""The method's data model (REFERENCE.md): what the explainer and simulator read and write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from autointerp.errors import InputError

# Quantile band edges of an excerpt's maximum activation (REFERENCE.md): [0,.5], [.5,.9], [.9,.99],
# [.99,.999]. Shown in the viewer; not used for scoring.
QUANTILES = (0.0, 0.5, 0.9, 0.99, 0.999)
N_BANDS = len(QUANTILES) - 1


@dataclass(frozen=True)
class NeuronId:
    """A neuron: the index of its MLP layer and its index within that layer."""

    layer: int
    neuron: int

    def __str__(self) -> str:
        return f"{self.layer}/{self.neuron}"


@dataclass(frozen=True)
class ActivationRecord:
    """One excerpt: its token strings and the neuron's raw (unnormalized) activation on each."""

    tokens: list[str]
    activations: list[float]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.activations):
            raise InputError(
                f"an activation record needs one activation per token: "
                f"{len(self.tokens)} tokens, {len(self.activations)} activations"
            )


def peak_activation(records: Sequence[ActivationRecord]) -> float:
    """The largest relu'd activation over the records: the scale the explainer's 0–10
    normalization, and every stage that speaks on that scale, divide by. 0 when none is
    positive."""
    return max((max([0.0, *r.activations]) for r in records), default=0.0)


def is_dead(max_activation: pl.Expr) -> pl.Expr:
    """A neuron that never fires: its largest activation over the corpus is not positive."""
    return max_activation <= 0
