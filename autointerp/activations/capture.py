"""Activation capture: one streaming forward pass over the corpus serves every requested layer.

A neuron is the input to the MLP's output projection, read by a forward pre-hook on that module.
The pass stops right after the deepest requested layer: layers above it, and the vocabulary
projection, never run. Each excerpt is wrapped in the special tokens the model's tokenizer adds
(Gemma's and Llama's beginning-of-sequence token, BERT's [CLS] and [SEP]), as the model saw text
in training; those positions are read by no record and no score.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import polars as pl
import torch

from autointerp.activations.neuron_records import LayerRecords, SamplingPlan, Scratch, Shard
from autointerp.activations.partial_records import PartialRecords, records_frame
from autointerp.activations.residuals import ResidualStream
from autointerp.activations.subject_model import SubjectModel
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError

# Layers whose records update while the model computes the next ones: each holds one batch of
# that layer's activations.
IN_FLIGHT = 2


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the model."""


class ActivationHooks:
    """Forward pre-hooks that hand each requested layer's neuron activations to a callback.

    On a model loaded without the blocks below its first layer (`load_subject_model(from_layer=)`),
    the pass starts at that layer from the hidden states given to `run`; with
    `leaving`, it runs through the whole block of the deepest layer and hands its output (the
    next layer's input) to `leaving`.
    """

    def __init__(
        self,
        subject: SubjectModel,
        layers: Sequence[int],
        on_batch: Callable[[int, torch.Tensor], None],
        *,
        leaving: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        self.subject, self.layers, self.on_batch = subject, sorted(layers), on_batch
        self.leaving = leaving
        self.hidden: torch.Tensor | None = None  # the batch's input to the first layer

    def __enter__(self) -> ActivationHooks:
        deepest = self.layers[-1]
        prefix, suffix = len(self.subject.special_prefix), len(self.subject.special_suffix)

        def hook_for(layer: int):
            def hook(_module, inputs):
                # Only the text's own positions: the special tokens around it are not records.
                values = inputs[0].detach()
                self.on_batch(layer, values[:, prefix : values.shape[1] - suffix])
                if layer == deepest and self.leaving is None:
                    raise _StopForward

            return hook

        def enter(_module, args, kwargs):
            hidden = self.hidden.to(self.subject.device)
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        def leave(_module, _args, output: torch.Tensor):
            self.leaving(output)
            raise _StopForward

        self.handles = [
            self.subject.neuron_module(layer).register_forward_pre_hook(hook_for(layer))
            for layer in self.layers
        ]
        if self.subject.first_layer:
            block = self.subject.layer_modules()[self.subject.first_layer]
            self.handles.append(block.register_forward_pre_hook(enter, with_kwargs=True))
        if self.leaving:
            block = self.subject.layer_modules()[deepest]
            self.handles.append(block.register_forward_hook(leave))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def run(self, token_ids: torch.Tensor, hidden: torch.Tensor | None = None) -> None:
        """Run a batch of texts' token ids (without special tokens) through the model; `hidden`:
        their hidden states entering the first layer, when the pass starts there."""
        token_ids = self.subject.with_special_tokens(token_ids)
        self.hidden = hidden
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


def capture_records(
    subject: SubjectModel,
    corpus: pl.DataFrame,
    layers: Sequence[int],
    spec: RecordsSpec,
    *,
    progress: Callable[[int, int], None] | None = None,
    entering: ResidualStream | None = None,
    leaving: ResidualStream | None = None,
) -> pl.DataFrame:
    """Neuron records for every neuron of `layers`, from one pass over `corpus`.

    `progress(done, total)` is called after each batch with excerpt counts.
    """
    partials = capture_partials(
        subject, corpus, layers, spec, progress=progress, entering=entering, leaving=leaving
    )
    return pl.concat([records_frame(partial, spec) for partial in partials])


def capture_partials(
    subject: SubjectModel,
    corpus: pl.DataFrame,
    layers: Sequence[int],
    spec: RecordsSpec,
    *,
    shard: Shard | None = None,
    progress: Callable[[int, int], None] | None = None,
    entering: ResidualStream | None = None,
    leaving: ResidualStream | None = None,
) -> Iterator[PartialRecords]:
    """Per layer, the partial records of one pass over `shard` of `corpus` (all of it when no
    shard is given): `merge_partials` of every shard's equals the one-pass partial. The pass runs
    at once; the partials are handed out one layer at a time.

    `entering`: the residual stream a pass over the layers below left (the pass starts from it,
    and deletes it once read through); `leaving`: where to leave the stream after the deepest
    layer, for a pass over the layers above (see `autointerp.activations.residuals`)."""
    layers = subject.check_layers(layers)
    if subject.first_layer and entering is None:
        raise InputError(
            f"the model was loaded from layer {subject.first_layer}: a pass over it starts from "
            "the residual stream a pass over the layers below left"
        )
    excerpt_ids, tokens = token_matrix(corpus)
    specials = len(subject.special_prefix) + len(subject.special_suffix)
    if tokens.shape[1] + specials > subject.context_length:
        raise InputError(
            f"excerpts of {tokens.shape[1]} tokens (plus {specials} special tokens) exceed the "
            f"model's context of {subject.context_length}"
        )
    if len(excerpt_ids) < spec.top_k:
        raise InputError(
            f"the corpus has {len(excerpt_ids)} excerpts, fewer than top_k={spec.top_k}"
        )
    plan = SamplingPlan.build(excerpt_ids, spec, shard)
    vocabulary = np.unique(tokens) if spec.top_mean_tokens else None
    scratch = Scratch()  # the layers update one at a time, on one worker thread
    records = {
        layer: LayerRecords(
            layer,
            subject.neurons_per_layer,
            tokens.shape[1],
            plan,
            spec,
            dtype=subject.dtype,
            vocabulary=vocabulary,
            scratch=scratch,
        )
        for layer in layers
    }
    rows = plan.order[:0]  # the corpus rows of the batch in the model
    in_flight: deque[Future] = deque()
    done = 0

    def update(layer: int, acts: torch.Tensor, rows: np.ndarray) -> None:
        ids = torch.from_numpy(excerpt_ids[rows])
        records[layer].update(acts.cpu(), rows, ids, tokens[rows])

    def on_layer(layer: int, acts: torch.Tensor) -> None:
        # A layer's records are updated on a worker thread as soon as its activations exist,
        # while the model computes the next layers (torch releases the GIL). Updates run in
        # order, and at most IN_FLIGHT layers' activations are held: memory stays one batch of
        # a few layers, however many layers a pass serves.
        while len(in_flight) >= IN_FLIGHT:
            in_flight.popleft().result()
        in_flight.append(worker.submit(update, layer, acts, rows))

    shape = (tokens.shape[1] + specials, subject.model.get_input_embeddings().embedding_dim)
    with (
        entering.reader(subject.dtype, shape) if entering else contextlib.nullcontext() as read,
        leaving.writer() if leaving else contextlib.nullcontext() as write,
        ActivationHooks(subject, layers, on_layer, leaving=write) as hooks,
        ThreadPoolExecutor(max_workers=1) as worker,
    ):
        for rows in plan.batches(subject.spec.batch_size):
            hooks.run(torch.from_numpy(tokens[rows]), read(len(rows)) if read else None)
            done += len(rows)
            if progress:
                progress(done, len(plan.order))
        while in_flight:
            in_flight.popleft().result()
    if entering:
        entering.remove()  # read through: the run it served is done
    # Each layer's accumulators are let go as soon as the caller has taken its partial: the peak
    # is the rows kept, not the rows and every accumulator besides.
    return (records.pop(layer).partial() for layer in layers)
