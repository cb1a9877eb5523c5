"""Seeded samples: of excerpts (by a hash of their ids) and of neurons (a profile's
`neuron_sample`). Both are deterministic given their seed, whatever the order of the input."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autointerp.activations.data_model import NeuronId
from autointerp.errors import ConfigError


def excerpt_keys(excerpt_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per excerpt id: splitmix64 of (seed, id). Smallest keys = sample."""
    with np.errstate(over="ignore"):
        z = excerpt_ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def neuron_keys(excerpt_ids: np.ndarray, neurons: np.ndarray, layer: int, seed: int) -> np.ndarray:
    """Uniform [0, 1) keys of (layer, neuron, excerpt id), the arrays broadcast against each other:
    a seeded hash, so every neuron draws its own random sample, the same on every run and for any
    batch size or shard."""
    with np.errstate(over="ignore"):
        mixed = excerpt_ids.astype(np.uint64) + neurons.astype(np.uint64) * np.uint64(
            0xD1B54A32D192ED03
        )
        mixed = mixed + np.uint64(layer) * np.uint64(0xAEF17502108EF2D9)
    return excerpt_keys(mixed, seed)


@dataclass(frozen=True)
class NeuronSample:
    """Which neurons a stage runs on: `all`, `first:N` or `random:N:SEED`, taken per layer."""

    mode: str  # all | first | random
    count: int | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, spec: str) -> NeuronSample:
        if spec == "all":
            return cls("all")
        if match := re.fullmatch(r"first:(\d+)", spec):
            return cls("first", int(match[1]))
        if match := re.fullmatch(r"random:(\d+):(\d+)", spec):
            return cls("random", int(match[1]), int(match[2]))
        raise ConfigError(
            f"neuron_sample {spec!r} is not 'all', 'first:N' or 'random:N:SEED' (N, SEED whole "
            "numbers)"
        )


def is_sample_spec(spec: object) -> bool:
    """Whether `spec` reads as a NeuronSample (`all`, `first:N`, `random:N:SEED`)."""
    try:
        NeuronSample.parse(str(spec))
    except ConfigError:
        return False
    return True


def select_neurons(
    neurons: Sequence[NeuronId], neuron_sample: str | NeuronSample
) -> list[NeuronId]:
    """The neurons a sample takes, sorted, taken per layer (a run may span several): all of
    them, the first N, or N chosen at random with a seed (the same neurons on every run)."""
    sample = NeuronSample.parse(neuron_sample) if isinstance(neuron_sample, str) else neuron_sample
    chosen: list[NeuronId] = []
    for layer in sorted({n.layer for n in neurons}):
        ordered = sorted((n for n in neurons if n.layer == layer), key=lambda n: n.neuron)
        if sample.mode == "all" or sample.count is None or sample.count >= len(ordered):
            chosen += ordered
        elif sample.mode == "first":
            chosen += ordered[: sample.count]
        else:
            picks = np.random.default_rng(sample.seed).choice(
                len(ordered), sample.count, replace=False
            )
            chosen += [ordered[i] for i in sorted(picks)]
    return chosen
