"""The method's data model (REFERENCE.md): what the explainer and simulator read and write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.errors import InputError


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
