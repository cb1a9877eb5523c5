"""Probing: arbitrary texts run through the subject model, with the activations of chosen neurons
on every token (counterexamples' true activations). The same hooks as capture read the neurons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import torch

from autointerp.activations.capture import ActivationHooks
from autointerp.activations.data_model import NeuronId
from autointerp.activations.subject_model import SubjectModel


@dataclass(frozen=True)
class TextActivations:
    """One text run through the subject model: its tokens (cut to the context when `truncated`)
    and each requested neuron's activation on every token."""

    tokens: list[str]
    truncated: bool
    activations: dict[NeuronId, np.ndarray]  # float32, one per token


def probe_texts(
    subject: SubjectModel,
    layer_neurons: Mapping[int, Sequence[int]],
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
) -> list[TextActivations]:
    """Run `texts` through the subject model and read the requested neurons on every token.

    Texts are tokenized with the model's tokenizer, wrapped in its special tokens as the corpus
    excerpts are, and cut to the model's context (`truncated`). Texts of equal length share a
    batch, so no padding ever reaches the model (exact for bidirectional models too), and each
    pass serves every requested layer. Every requested neuron is read on every text: memory is
    texts × tokens × neurons, so callers with many texts of different neurons call per group."""
    if not texts:
        return []
    layers = subject.check_layers(layer_neurons)
    columns = {layer: [int(n) for n in layer_neurons[layer]] for layer in layers}
    size = batch_size or subject.spec.batch_size
    # Room for the special tokens the model's tokenizer puts around every text.
    limit = subject.context_length - len(subject.special_prefix) - len(subject.special_suffix)
    encoded = subject.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ids = [list(row[:limit]) for row in encoded]
    vocabulary = sorted({i for row in ids for i in row})
    decoded = subject.tokenizer.batch_decode(
        [[i] for i in vocabulary], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    strings = dict(zip(vocabulary, decoded, strict=True))
    # A text with no tokens is never run: its neurons keep an empty array.
    requested = [NeuronId(layer, n) for layer in layers for n in columns[layer]]
    values = [dict.fromkeys(requested, np.zeros(0, dtype=np.float32)) for _ in texts]
    captured: dict[int, torch.Tensor] = {}
    # Templates repeat across neurons: each distinct text runs once, its copies share the result.
    first: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(ids):
        first.setdefault(tuple(row), i)
    distinct = [i for i in first.values() if ids[i]]
    order = sorted(distinct, key=lambda i: (len(ids[i]), i))
    with ActivationHooks(subject, layers, captured.__setitem__) as hooks:
        for _, same_length in groupby(order, key=lambda i: len(ids[i])):
            members = list(same_length)
            for start in range(0, len(members), size):
                batch = members[start : start + size]
                hooks.run(torch.tensor([ids[i] for i in batch], dtype=torch.long))
                for layer in layers:
                    acts = captured.pop(layer)[..., columns[layer]].float().cpu().numpy()
                    for row, i in enumerate(batch):
                        for column, n in enumerate(columns[layer]):
                            values[i][NeuronId(layer, n)] = acts[row, :, column]
    for i, row in enumerate(ids):
        values[i] = values[first[tuple(row)]]
    return [
        TextActivations(
            tokens=[strings[t] for t in ids[i]],
            truncated=len(encoded[i]) > limit,
            activations=values[i],
        )
        for i in range(len(texts))
    ]
