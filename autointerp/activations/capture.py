"""Activation capture: one streaming forward pass over the corpus serves every requested layer.

A neuron is the input to the MLP's output projection, read by a forward pre-hook on that module.
The pass stops right after the deepest requested layer: layers above it, and the vocabulary
projection, never run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import polars as pl
import torch

from autointerp.activations.neuron_records import LayerRecords, SamplingPlan
from autointerp.activations.subject_model import SubjectModel
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the model."""


class ActivationHooks:
    """Forward pre-hooks that hand each requested layer's neuron activations to a callback."""

    def __init__(
        self,
        subject: SubjectModel,
        layers: Sequence[int],
        on_batch: Callable[[int, torch.Tensor], None],
    ) -> None:
        self.subject, self.layers, self.on_batch = subject, sorted(layers), on_batch

    def __enter__(self) -> ActivationHooks:
        deepest = self.layers[-1]

        def hook_for(layer: int):
            def hook(_module, inputs):
                self.on_batch(layer, inputs[0].detach())
                if layer == deepest:
                    raise _StopForward

            return hook

        self.handles = [
            self.subject.neuron_module(layer).register_forward_pre_hook(hook_for(layer))
            for layer in self.layers
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def run(self, token_ids: torch.Tensor) -> None:
        with torch.inference_mode(), contextlib.suppress(_StopForward):
            self.subject.model(
                input_ids=token_ids.to(self.subject.device),
                attention_mask=torch.ones_like(token_ids, device=self.subject.device),
            )


def token_matrix(corpus: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(excerpt_ids [n], token_ids [n, length]) of a corpus whose excerpts share one length."""
    if corpus.height == 0:
        raise InputError("the corpus has no excerpts")
    lengths = corpus["token_ids"].list.len().unique()
    if lengths.len() != 1:
        raise InputError(f"corpus excerpts differ in length: {sorted(lengths.to_list())}")
    ids = corpus["excerpt_id"].to_numpy()
    tokens = np.asarray(corpus["token_ids"].to_list(), dtype=np.int64)
    return ids, tokens


def batches(order: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def capture_records(
    subject: SubjectModel,
    corpus: pl.DataFrame,
    layers: Sequence[int],
    spec: RecordsSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Neuron records for every neuron of `layers`, from one pass over `corpus`.

    `progress(done, total)` is called after each batch with excerpt counts.
    """
    layers = subject.check_layers(layers)
    excerpt_ids, tokens = token_matrix(corpus)
    if tokens.shape[1] > subject.context_length:
        raise InputError(
            f"excerpts of {tokens.shape[1]} tokens exceed the model's context of "
            f"{subject.context_length}"
        )
    if len(excerpt_ids) < spec.top_k:
        raise InputError(
            f"the corpus has {len(excerpt_ids)} excerpts, fewer than top_k={spec.top_k}"
        )
    plan = SamplingPlan.build(excerpt_ids, spec)
    records = {
        layer: LayerRecords(subject.neurons_per_layer, tokens.shape[1], plan, spec)
        for layer in layers
    }
    captured: dict[int, torch.Tensor] = {}
    done = 0

    def update(batch: dict[int, torch.Tensor], rows: np.ndarray) -> None:
        ids = torch.from_numpy(excerpt_ids[rows])
        for layer in layers:
            records[layer].update(batch[layer].cpu(), rows, ids)

    # The records of batch i are updated on a worker thread while batch i+1 runs through the
    # model: torch releases the GIL, and the forward pass leaves the cores partly idle.
    with (
        ActivationHooks(subject, layers, captured.__setitem__) as hooks,
        ThreadPoolExecutor(max_workers=1) as worker,
    ):
        pending: Future | None = None
        for rows in batches(plan.order, subject.spec.batch_size):
            hooks.run(torch.from_numpy(tokens[rows]))
            batch = dict(captured)
            captured.clear()
            if pending is not None:
                pending.result()  # one batch in flight: memory stays bounded
            pending = worker.submit(update, batch, rows)
            done += len(rows)
            if progress:
                progress(done, len(plan.order))
        if pending is not None:
            pending.result()
    return pl.concat([records[layer].frame(layer, excerpt_ids) for layer in layers])
