"""A published dataset's layers as this project's frames, with no forward pass.

Per layer: `neuron_records` (the capture's columns, plus `record_file` and `explanation_file`
naming the files each neuron came from), `corpus` (the excerpts of those records: an imported
dataset has no corpus of ours) and `imported_explanations` (the published explanations with their
scored simulations and stored scores; IMPORTED_EXPLANATIONS_SCHEMA).

How a NeuronRecord maps onto a record (the `[records]` settings apply as in capture): the first
`top_k` most positive records are the top excerpts; of the random sample, the first `random_k`
are the scored random excerpts and the next `reference_k` the baseline explainer's base rates
(never scored); the first `quantile_k` of each quantile band are kept. The splits then follow the
reference's interleaving (`activations.splits`), as the publication's own reader slices them.
The maximum activation is the largest over the kept top records.

Excerpt ids come from the position of the record in its file, so that an id names the file it
came from: `((layer << 24) + neuron) << 16 | slot`, slots counting the most positive records,
then the random sample, then the quantile bands, in file order (records not kept use up their
slot). An excerpt scored in the explanations file is the kept record it matches (same tokens and
activations); one that matches none is added to the corpus with the next free slot, as `top` when
it peaks at least as high as the neuron's weakest top record, else `random`. A corpus row holds
the tokens as published, their concatenation as text, no token ids, the record file as source,
and an unknown licence (the publisher's terms apply). Each layer's excerpts are a corpus of their
own, with a `corpus_id` hashed from their content (`LayerCorpusId`), which the layer's records
name as a captured layer's records name the corpus they were captured over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from autointerp.activations.data_model import NeuronId
from autointerp.activations.sampling import select_neurons
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.interchange.exporting import SAMPLES
from autointerp.interchange.layout import Dataset, explanation_file, record_file
from autointerp.interchange.published import (
    Excerpt,
    NeuronRecordFile,
    ScoredExplanationFile,
    many_objects,
    read_neuron_record,
    read_simulation_results,
)
from autointerp.progress import Progress
from autointerp.storage.columns import nested_lists
from autointerp.storage.schemas import IMPORTED_EXPLANATIONS_SCHEMA

NEURON_BITS, SLOT_BITS = 24, 16
UNKNOWN_LICENSE = "unknown: the terms of the dataset's publisher apply"
_CHUNK = 256  # neurons whose files are read at once


def excerpt_id(layer: int, neuron: int, slot: int) -> int:
    """The id of the record in slot `slot` of the neuron's files (see the module docstring)."""
    if not (0 <= neuron < 1 << NEURON_BITS and 0 <= slot < 1 << SLOT_BITS):
        raise InputError(
            f"layer {layer} neuron {neuron}: more than {1 << SLOT_BITS} records, or a neuron "
            f"index of {1 << NEURON_BITS} or more, which excerpt ids cannot name"
        )
    return ((layer << NEURON_BITS) + neuron) << SLOT_BITS | slot


@dataclass
class _Kept:
    """Excerpts of one kind kept for a neuron, with their ids."""

    ids: list[int] = field(default_factory=list)
    excerpts: list[Excerpt] = field(default_factory=list)

    def add(self, ident: int, excerpt: Excerpt) -> None:
        self.ids.append(ident)
        self.excerpts.append(excerpt)


@dataclass
class _Neuron:
    """One neuron as read: what each frame gets of it."""

    layer: int
    neuron: int
    files: tuple[str, str | None]  # the record file, the explanation file (None: absent)
    moments: tuple[float, float, float, float]
    quantile_boundaries: list[float] | None
    kept: dict[str, _Kept]  # SAMPLES
    bands: list[_Kept]
    scored: list[_Kept] = field(default_factory=list)  # per explanation: its excerpts
    kinds: list[list[str]] = field(default_factory=list)
    extra: _Kept = field(default_factory=_Kept)  # scored excerpts matching no kept record
    explained: list[ScoredExplanationFile] = field(default_factory=list)


def _key(activations: np.ndarray) -> bytes:
    """What finds the record a scored excerpt is: its activations (as stored, float32), then its
    tokens compared on a match only."""
    return activations.astype(np.float32).tobytes()


def _neuron(
    layer: int,
    neuron: int,
    files: tuple[str, str | None],
    record: NeuronRecordFile,
    explained: list[ScoredExplanationFile],
    spec: RecordsSpec,
) -> _Neuron:
    """Which records a neuron keeps, their ids, and which of them each explanation scored."""
    kept = {name: _Kept() for name in SAMPLES}
    random_start = len(record.top)
    for slot, excerpt in enumerate(record.top[: spec.top_k]):
        kept["top"].add(excerpt_id(layer, neuron, slot), excerpt)
    for i, excerpt in enumerate(record.random[: spec.random_k + spec.reference_k]):
        name = "random" if i < spec.random_k else "reference"
        kept[name].add(excerpt_id(layer, neuron, random_start + i), excerpt)
    bands, slot = [], random_start + len(record.random)
    for band in record.by_quantile:
        chosen = _Kept()
        for i, excerpt in enumerate(band[: spec.quantile_k]):
            chosen.add(excerpt_id(layer, neuron, slot + i), excerpt)
        bands.append(chosen)
        slot += len(band)
    found = _Neuron(
        layer,
        neuron,
        files,
        record.moments,
        record.quantile_boundaries,
        kept,
        bands,
        explained=explained,
    )
    known: dict[bytes, list[tuple[list[str], int, str]]] = {}
    for name in SAMPLES:
        for i, e in zip(kept[name].ids, kept[name].excerpts, strict=True):
            entry = (e.tokens, i, "top" if name == "top" else "random")
            known.setdefault(_key(e.activations), []).append(entry)
    weakest_top = min((e.activations.max(initial=-np.inf) for e in kept["top"].excerpts), default=0)
    for explanation in explained:
        scored, kinds = _Kept(), []
        for sequence in explanation.sequences:
            excerpt = Excerpt(sequence.tokens, sequence.true_activations)
            same = known.setdefault(_key(excerpt.activations), [])
            match = next((m for m in same if m[0] == excerpt.tokens), None)
            if match is None:
                peak = excerpt.activations.max(initial=-np.inf)
                match = (
                    excerpt.tokens,
                    excerpt_id(layer, neuron, slot),
                    "top" if peak >= weakest_top else "random",
                )
                same.append(match)
                found.extra.add(match[1], excerpt)
                slot += 1
            scored.add(match[1], excerpt)
            kinds.append(match[2])
        found.scored.append(scored)
        found.kinds.append(kinds)
    return found


def _read_neurons(
    dataset: Dataset, layer: int, neurons: Sequence[int], spec: RecordsSpec
) -> list[_Neuron]:
    root = dataset.location
    records = [record_file(root, layer, n) for n in neurons]
    explanations = [explanation_file(root, layer, n) for n in neurons]
    record_texts = dataset.read(records)
    explanation_texts = dataset.read(explanations)
    out = []
    for neuron, files, texts in zip(
        neurons,
        zip(records, explanations, strict=True),
        zip(record_texts, explanation_texts, strict=True),
        strict=True,
    ):
        if texts[0] is None:
            raise InputError(
                f"{files[0]} is missing: the dataset has no neuron {neuron} of layer {layer}"
            )
        record = read_neuron_record(texts[0], files[0], layer, neuron)
        explained = (
            [] if texts[1] is None else read_simulation_results(texts[1], files[1], layer, neuron)
        )
        present = (files[0], None if texts[1] is None else files[1])
        out.append(_neuron(layer, neuron, present, record, explained, spec))
    return out


def import_layers(
    dataset: Dataset,
    layers: Sequence[int],
    *,
    neurons: int,
    neuron_sample: str,
    spec: RecordsSpec,
    progress: Progress | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(corpus, neuron_records, imported_explanations) of `layers`, each layer's neurons
    0..`neurons`-1 sampled by `neuron_sample`, read a chunk of neurons at a time (memory: the
    frames and one chunk's parsed files). An InputError names the first bad or missing file."""
    frames: list[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]] = []
    chosen = {
        layer: [
            n.neuron
            for n in select_neurons([NeuronId(layer, i) for i in range(neurons)], neuron_sample)
        ]
        for layer in layers
    }
    total, done = sum(len(v) for v in chosen.values()), 0
    corpus_ids: dict[int, str] = {}
    with many_objects():
        for layer in layers:
            dataset.check_layer(layer)
            identity = LayerCorpusId()
            for start in range(0, len(chosen[layer]), _CHUNK):
                read = _read_neurons(dataset, layer, chosen[layer][start : start + _CHUNK], spec)
                corpus = _corpus(read)
                identity.update(corpus)
                frames.append((corpus, _records(read), _explanations(read)))
                done += len(read)
                if progress is not None:
                    progress(done, total)
            corpus_ids[layer] = identity.hexdigest()
    if not frames:
        raise InputError(f"no neuron to import: neuron_sample {neuron_sample!r} chose none")
    corpus, records, explanations = (pl.concat(parts) for parts in zip(*frames, strict=True))
    ids = pl.col("layer").replace_strict(corpus_ids, return_dtype=pl.Utf8).alias("corpus_id")
    return corpus.select(ids, pl.all()), records.with_columns(ids), explanations


class LayerCorpusId:
    """The identity of a layer's imported corpus, fed its frame a chunk at a time: a hash of
    every excerpt's id, tokens, source and licence (so the same files, neurons and records
    settings give the same id, however the reading was chunked)."""

    _STRINGS = ("tokens", "source", "license")  # each hashed as byte lengths, then the bytes

    def __init__(self) -> None:
        parts = ["excerpt_id", "token_counts"]
        parts += [f"{column}{half}" for column in self._STRINGS for half in ("_lengths", "")]
        self._parts = {part: hashlib.sha256() for part in parts}

    def update(self, corpus: pl.DataFrame) -> None:
        numbers = {
            "excerpt_id": corpus["excerpt_id"],
            "token_counts": corpus["tokens"].list.len(),
        }
        for column in self._STRINGS:
            strings = corpus[column].explode() if column == "tokens" else corpus[column]
            numbers[f"{column}_lengths"] = strings.str.len_bytes()
            self._parts[column].update(strings.str.join("").item().encode())
        for part, series in numbers.items():
            self._parts[part].update(series.to_numpy().astype(np.int64).tobytes())

    def hexdigest(self) -> str:
        whole = hashlib.sha256(b"imported-corpus")
        for part in self._parts.values():
            whole.update(part.digest())
        return f"corpus-{whole.hexdigest()[:16]}"


def _lists(arrays: Sequence[np.ndarray], *lengths: Sequence[int], dtype=np.float32) -> pl.Series:
    """Nested lists from one array per innermost list and the lengths of the outer levels."""
    flat = np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.empty(0, dtype)
    inner = np.asarray([len(a) for a in arrays], dtype=np.int64)
    return nested_lists(flat, inner, *(np.asarray(n, dtype=np.int64) for n in lengths))


def _records(read: list[_Neuron]) -> pl.DataFrame:
    """The neuron_records rows, in the capture's columns and types, then the files read."""
    moments = np.asarray([n.moments for n in read], dtype=np.float64).reshape(-1, 4)
    top_max = [
        [float(e.activations.max(initial=-np.inf)) for e in n.kept["top"].excerpts] for n in read
    ]
    columns: dict[str, pl.Series] = {
        "layer": pl.Series([n.layer for n in read], dtype=pl.Int32),
        "neuron": pl.Series([n.neuron for n in read], dtype=pl.Int32),
        **{
            name: pl.Series(moments[:, i], dtype=pl.Float64)
            for i, name in enumerate(("mean", "variance", "skewness", "kurtosis"))
        },
        "max_activation": pl.Series([max(m, default=np.nan) for m in top_max], dtype=pl.Float64),
        "quantile_boundaries": pl.Series(
            [n.quantile_boundaries for n in read], dtype=pl.List(pl.Float64)
        ),
    }
    for name in SAMPLES:
        kept = [n.kept[name] for n in read]
        columns[f"{name}_excerpt_ids"] = pl.Series([k.ids for k in kept], dtype=pl.List(pl.Int64))
        if name == "top":
            columns["top_max_activations"] = pl.Series(top_max, dtype=pl.List(pl.Float32))
        columns[f"{name}_activations"] = _lists(
            [e.activations for k in kept for e in k.excerpts], [len(k.excerpts) for k in kept]
        )
    columns["quantile_excerpt_ids"] = pl.Series(
        [[band.ids for band in n.bands] for n in read], dtype=pl.List(pl.List(pl.Int64))
    )
    columns["quantile_activations"] = _lists(
        [e.activations for n in read for band in n.bands for e in band.excerpts],
        [len(band.excerpts) for n in read for band in n.bands],
        [len(n.bands) for n in read],
    )
    columns["record_file"] = pl.Series([n.files[0] for n in read], dtype=pl.Utf8)
    columns["explanation_file"] = pl.Series([n.files[1] for n in read], dtype=pl.Utf8)
    return pl.DataFrame(columns)


def _corpus(read: list[_Neuron]) -> pl.DataFrame:
    """Every kept or scored excerpt once: the imported dataset's corpus."""
    layers, ids, excerpts, sources = [], [], [], []
    for n in read:
        for kept in [*(n.kept[name] for name in SAMPLES), *n.bands, n.extra]:
            layers += [n.layer] * len(kept.ids)
            ids += kept.ids
            excerpts += kept.excerpts
            sources += [n.files[0]] * len(kept.ids)
    tokens = _lists([np.asarray(e.tokens, dtype=object) for e in excerpts], dtype=object)
    return pl.DataFrame(
        {
            "layer": pl.Series(layers, dtype=pl.Int32),
            "excerpt_id": pl.Series(ids, dtype=pl.Int64),
            "text": pl.Series(["".join(e.tokens) for e in excerpts], dtype=pl.Utf8),
            "tokens": tokens.cast(pl.List(pl.Utf8)),
            "token_ids": pl.Series([None] * len(ids), dtype=pl.List(pl.Int32)),
            "source": pl.Series(sources, dtype=pl.Utf8),
            "license": pl.Series([UNKNOWN_LICENSE] * len(ids), dtype=pl.Utf8),
        }
    )


def _explanations(read: list[_Neuron]) -> pl.DataFrame:
    rows = [
        (n, sample, explained, scored, kinds)
        for n in read
        for sample, (explained, scored, kinds) in enumerate(
            zip(n.explained, n.scored, n.kinds, strict=True)
        )
    ]
    sequences = [s for _, _, explained, _, _ in rows for s in explained.sequences]
    counts = [len(explained.sequences) for _, _, explained, _, _ in rows]
    expected = [
        np.asarray([np.nan if v is None else v for v in s.expected_activations]) for s in sequences
    ]
    scores = np.asarray([e.scores for _, _, e, _, _ in rows], dtype=np.float64).reshape(-1, 3)
    frame = pl.DataFrame(
        {
            "layer": pl.Series([n.layer for n, *_ in rows], dtype=pl.Int32),
            "neuron": pl.Series([n.neuron for n, *_ in rows], dtype=pl.Int32),
            "sample": pl.Series([sample for _, sample, *_ in rows], dtype=pl.Int32),
            "explanation": pl.Series([e.explanation for _, _, e, _, _ in rows], dtype=pl.Utf8),
            "ev_correlation": scores[:, 0],
            "rsquared": scores[:, 1],
            "absolute_dev_explained": scores[:, 2],
            "calibrated": pl.Series(
                [any(s.calibrated for s in e.sequences) for _, _, e, _, _ in rows],
                dtype=pl.Boolean,
            ),
            "excerpt_ids": pl.Series([k.ids for *_, k, _ in rows], dtype=pl.List(pl.Int64)),
            "kinds": pl.Series([kinds for *_, kinds in rows], dtype=pl.List(pl.Utf8)),
            "true_activations": _lists([s.true_activations for s in sequences], counts),
            # A position the simulator did not answer is NaN here, null in the table.
            "expected_activations": _lists(expected, counts),
            "explanation_file": pl.Series([n.files[1] for n, *_ in rows], dtype=pl.Utf8),
        }
    )
    return (
        frame.with_columns(
            pl.col("expected_activations").list.eval(
                pl.element().list.eval(pl.element().fill_nan(None))
            )
        )
        .select(*IMPORTED_EXPLANATIONS_SCHEMA)
        .cast(IMPORTED_EXPLANATIONS_SCHEMA)
    )
