"""Partial neuron records: what a pass over part of a corpus keeps, merged exactly into records.

A pass over one corpus shard keeps, per neuron, candidate slots (top-k by maximum activation, the
smallest random keys, the smallest band priorities), moments as central sums, the maximum, the
quantile boundaries and per-token sums. Every choice is by a total order on (key, excerpt id), so
the best k of the union of shards' best k are the best k of the whole corpus; central moments merge
by the pairwise update of Chan et al. (extended to the 3rd and 4th moments by Pébay); maxima and
sums add up. The one-pass records are the same finishing step applied to a single partial, so
sharded and one-pass records come from one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from autointerp.activations.data_model import N_BANDS, QUANTILES
from autointerp.activations.sampling import neuron_keys
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.storage.columns import nested_lists as _nested


@dataclass
class Slots:
    """Candidate excerpts per neuron along the last slot axis: keys (larger is better), excerpt
    ids (-1: empty) and per-token activations [..., slots, tokens]."""

    keys: np.ndarray
    ids: np.ndarray
    acts: np.ndarray

    def ranked(self, k: int | None = None) -> Slots:
        """Best first: largest key, then smallest excerpt id (a total order, so any split of the
        corpus ranks alike); the first `k` only when given. Empty slots go last."""
        order = np.lexsort((self.ids, -self.keys), axis=-1)[..., :k]
        return Slots(
            np.take_along_axis(self.keys, order, axis=-1),
            np.take_along_axis(self.ids, order, axis=-1),
            np.take_along_axis(self.acts, order[..., None], axis=-2),
        )

    @staticmethod
    def union(parts: Sequence[Slots]) -> Slots:
        return Slots(
            np.concatenate([p.keys for p in parts], axis=-1),
            np.concatenate([p.ids for p in parts], axis=-1),
            np.concatenate([p.acts for p in parts], axis=-2),
        )


@dataclass
class CentralMoments:
    """Per neuron: count, mean and the sums of 2nd, 3rd and 4th powers of deviations from it."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    m4: np.ndarray

    def merge(self, other: CentralMoments) -> CentralMoments:
        """The moments of the union (Chan et al. 1979; Pébay 2008 for m3 and m4)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        a, b = self.count, other.count
        n = a + b
        d = other.mean - self.mean
        return CentralMoments(
            count=n,
            mean=self.mean + d * b / n,
            m2=self.m2 + other.m2 + d**2 * a * b / n,
            m3=self.m3
            + other.m3
            + d**3 * a * b * (a - b) / n**2
            + 3 * d * (a * other.m2 - b * self.m2) / n,
            m4=self.m4
            + other.m4
            + d**4 * a * b * (a * a - a * b + b * b) / n**3
            + 6 * d**2 * (a * a * other.m2 + b * b * self.m2) / n**2
            + 4 * d * (a * other.m3 - b * self.m3) / n,
        )

    def result(self) -> dict[str, np.ndarray]:
        """mean, variance (population), skewness, kurtosis (excess, 0 for a normal)."""
        n = max(self.count, 1)
        variance = self.m2 / n
        safe = variance > 1e-12  # a constant neuron has no defined shape: NaN, not inf
        spread = np.where(safe, variance, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "mean": self.mean,
                "variance": variance,
                "skewness": np.where(safe, self.m3 / n / spread**1.5, np.nan),
                "kurtosis": np.where(safe, self.m4 / n / spread**2 - 3, np.nan),
            }


@dataclass
class PartialRecords:
    """One layer's accumulators after a pass over part (or all) of a corpus."""

    layer: int
    top: Slots  # [neurons, top_k]
    random: Slots  # [neurons, random_k + reference_k], outside top; key: minus the neuron's hash
    bands: Slots  # [neurons, bands, quantile_k], key: minus the excerpt's plan key
    moments: CentralMoments
    max_activation: np.ndarray  # [neurons]
    boundaries: np.ndarray  # [neurons, len(QUANTILES)], NaN before the pool was seen
    vocabulary: np.ndarray | None = None  # the corpus's distinct token ids, sorted
    token_sums: np.ndarray | None = None  # [vocabulary, neurons]
    token_counts: np.ndarray | None = None  # [vocabulary]

    @property
    def n_neurons(self) -> int:
        return self.top.ids.shape[0]


def merge_partials(parts: Sequence[PartialRecords], seed: int) -> PartialRecords:
    """The partial records of the union of disjoint corpus shards (one layer); `seed`: the
    records' seed, which keys the random samples."""
    if not parts:
        raise InputError("no partial records to merge")
    layers = {p.layer for p in parts}
    if len(layers) != 1:
        raise InputError(f"partial records of different layers cannot merge: {sorted(layers)}")
    first = parts[0]
    for other in parts[1:]:
        # Every shard estimates them from the same seeded pool; a nondeterministic forward pass
        # (some GPU kernels) can move them by rounding only.
        if not np.allclose(first.boundaries, other.boundaries, rtol=1e-3, equal_nan=True):
            raise InputError(
                f"layer {first.layer}: shards disagree on the quantile boundaries of the shared "
                "pool; the forward pass is not deterministic (on CUDA, set "
                "torch.use_deterministic_algorithms(True))"
            )
    moments = first.moments
    for other in parts[1:]:
        moments = moments.merge(other.moments)
    per_token = first.token_sums is not None
    k = first.top.ids.shape[-1]
    tops = Slots.union([p.top for p in parts]).ranked()
    # A shard's top-k excerpts that the merged top-k leaves out are random candidates too: each
    # shard offered the others already.
    left_out = tops.ids[:, k:]
    neurons = np.arange(first.n_neurons)[:, None]
    random_keys = np.where(
        left_out >= 0, -neuron_keys(left_out, neurons, first.layer, seed), -np.inf
    )
    candidates = Slots(random_keys, left_out, tops.acts[:, k:])
    return PartialRecords(
        layer=first.layer,
        top=Slots(tops.keys[:, :k], tops.ids[:, :k], tops.acts[:, :k]),
        random=Slots.union([candidates, *(p.random for p in parts)]).ranked(
            first.random.ids.shape[-1]
        ),
        bands=Slots.union([p.bands for p in parts]).ranked(first.bands.ids.shape[-1]),
        moments=moments,
        max_activation=np.max([p.max_activation for p in parts], axis=0),
        boundaries=first.boundaries,
        vocabulary=first.vocabulary,
        token_sums=sum(p.token_sums for p in parts) if per_token else None,
        token_counts=sum(p.token_counts for p in parts) if per_token else None,
    )


# --- finishing: partial -> the neuron_records table ------------------------------------------


def records_frame(partial: PartialRecords, spec: RecordsSpec) -> pl.DataFrame:
    """One row per neuron, the REFERENCE.md NeuronRecord as columns."""
    top = partial.top.ranked()
    n_neurons, length = top.ids.shape[0], top.acts.shape[-1]
    top_valid = top.ids >= 0
    random = partial.random.ranked()
    random_ids, random_acts, random_valid = random.ids, random.acts, random.ids >= 0
    k = spec.random_k
    bands = partial.bands.ranked()
    band_valid = bands.ids >= 0
    per_band = band_valid.sum(axis=2).ravel()
    stats = partial.moments.result() | {"max_activation": partial.max_activation}
    rows = np.full(n_neurons, 1)
    columns = {
        "layer": pl.Series([partial.layer] * n_neurons, dtype=pl.Int32),
        "neuron": pl.Series(np.arange(n_neurons), dtype=pl.Int32),
        **{name: pl.Series(values, dtype=pl.Float64) for name, values in stats.items()},
        "quantile_boundaries": _nested(partial.boundaries.ravel(), rows * len(QUANTILES)),
        "top_excerpt_ids": _nested(top.ids[top_valid], top_valid.sum(1)),
        "top_max_activations": _nested(top.keys[top_valid], top_valid.sum(1)),
        "top_activations": _nested(
            top.acts[top_valid].ravel(), np.full(top_valid.sum(), length), top_valid.sum(1)
        ),
        **_samples("random", random_ids[:, :k], random_acts[:, :k], random_valid[:, :k]),
        **_samples("reference", random_ids[:, k:], random_acts[:, k:], random_valid[:, k:]),
        "quantile_excerpt_ids": _nested(bands.ids[band_valid], per_band, rows * N_BANDS),
        "quantile_activations": _nested(
            bands.acts[band_valid].ravel(),
            np.full(band_valid.sum(), length),
            per_band,
            rows * N_BANDS,
        ),
    }
    if partial.token_sums is not None and spec.top_mean_tokens:
        token_ids, means = _top_mean_tokens(partial, spec.top_mean_tokens)
        columns["top_mean_token_ids"] = _nested(
            token_ids.astype(np.int32).ravel(), np.full(n_neurons, token_ids.shape[1])
        )
        columns["top_mean_token_means"] = _nested(means.ravel(), np.full(n_neurons, means.shape[1]))
    return pl.DataFrame(columns)


def _top_mean_tokens(partial: PartialRecords, k: int) -> tuple[np.ndarray, np.ndarray]:
    """([neurons, k] token ids, [neurons, k] means), highest mean first."""
    assert partial.vocabulary is not None and partial.token_counts is not None
    sums = torch.from_numpy(partial.token_sums)
    means = sums / torch.from_numpy(partial.token_counts).clamp(min=1)[:, None]
    values, rows = means.topk(min(k, len(partial.vocabulary)), dim=0)
    return partial.vocabulary[rows.T.numpy()], values.T.numpy()


def _samples(name: str, ids: np.ndarray, acts: np.ndarray, valid: np.ndarray) -> dict:
    """`<name>_excerpt_ids` and `<name>_activations` columns from [neurons, k] slots."""
    length = acts.shape[2]
    return {
        f"{name}_excerpt_ids": _nested(ids[valid], valid.sum(1)),
        f"{name}_activations": _nested(
            acts[valid].ravel(), np.full(valid.sum(), length), valid.sum(1)
        ),
    }


# --- the shard table: partial records as rows, and back -----------------------------------------


def _fixed(values: np.ndarray) -> pl.Series:
    """A [neurons, ...] array as nested lists, one row per neuron, every level full."""
    shape = values.shape
    return _nested(
        values.ravel(),
        *(np.full(int(np.prod(shape[:i])), shape[i]) for i in range(len(shape) - 1, 0, -1)),
    )


def _dense(series: pl.Series, shape: tuple[int, ...]) -> np.ndarray:
    array = series.rechunk().to_arrow()
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).reshape(shape)


def partial_frame(partial: PartialRecords) -> pl.DataFrame:
    """One row per neuron holding every accumulator, with empty slots (a shard table's rows)."""
    n = partial.n_neurons
    columns = {
        "layer": pl.Series([partial.layer] * n, dtype=pl.Int32),
        "neuron": pl.Series(np.arange(n), dtype=pl.Int32),
        "count": pl.Series([partial.moments.count] * n, dtype=pl.Int64),
        **{
            name: pl.Series(getattr(partial.moments, name), dtype=pl.Float64)
            for name in ("mean", "m2", "m3", "m4")
        },
        "max_activation": pl.Series(partial.max_activation, dtype=pl.Float64),
        "quantile_boundaries": _fixed(partial.boundaries),
    }
    for name in ("top", "random", "bands"):
        slots: Slots = getattr(partial, name)
        columns |= {
            f"{name}_keys": _fixed(slots.keys),
            f"{name}_ids": _fixed(slots.ids),
            f"{name}_acts": _fixed(slots.acts),
        }
    if partial.token_sums is not None:
        assert partial.vocabulary is not None and partial.token_counts is not None
        columns |= {
            "token_sums": _fixed(np.ascontiguousarray(partial.token_sums.T)),
            "token_vocabulary": _fixed(np.tile(partial.vocabulary, (n, 1))),
            "token_counts": _fixed(np.tile(partial.token_counts, (n, 1))),
        }
    return pl.DataFrame(columns)


def _read_slots(rows: pl.DataFrame, name: str, shape: tuple[int, ...], length: int) -> Slots:
    return Slots(
        _dense(rows[f"{name}_keys"], shape),
        _dense(rows[f"{name}_ids"], shape),
        _dense(rows[f"{name}_acts"], (*shape, length)),
    )


def read_partials(frame: pl.DataFrame, spec: RecordsSpec) -> list[PartialRecords]:
    """Per layer, the partial records held in a shard table's rows (`partial_frame`'s inverse)."""
    found = []
    for (layer,), rows in frame.sort("layer", "neuron").group_by("layer", maintain_order=True):
        n = rows.height
        length = rows["top_acts"].list.explode().list.len()[0]  # tokens per excerpt
        random_slots = spec.random_k + spec.reference_k

        tokens = "token_sums" in rows.columns
        vocabulary = rows["token_vocabulary"][0].to_numpy() if tokens else None
        found.append(
            PartialRecords(
                layer=int(layer),
                top=_read_slots(rows, "top", (n, spec.top_k), length),
                random=_read_slots(rows, "random", (n, random_slots), length),
                bands=_read_slots(rows, "bands", (n, N_BANDS, spec.quantile_k), length),
                moments=CentralMoments(
                    int(rows["count"][0]), *(rows[m].to_numpy() for m in ("mean", "m2", "m3", "m4"))
                ),
                max_activation=rows["max_activation"].to_numpy(),
                boundaries=_dense(rows["quantile_boundaries"], (n, len(QUANTILES))),
                vocabulary=vocabulary,
                token_sums=(
                    _dense(rows["token_sums"], (n, len(vocabulary))).T.copy() if tokens else None
                ),
                token_counts=rows["token_counts"][0].to_numpy() if tokens else None,
            )
        )
    return found
