"""Streaming neuron records: per neuron, the top-k excerpts, random and quantile-band samples, the
tokens with the highest mean activation, and moments of the activation distribution.

Everything here is a fixed-size accumulator updated batch by batch, so memory is bounded by
neurons × kept excerpts × excerpt length, whatever the corpus size. Every sample is chosen by a key
(the excerpt's maximum activation for top-k; a seeded hash of the excerpt id, and of the neuron for
the random samples), so results are deterministic, do not depend on the batch size, and the
per-shard results of a split corpus merge exactly.

Random records are drawn per neuron, from outside its top-k: each neuron keeps the excerpts with
the smallest hash of (seed, layer, neuron, excerpt); at the end the ones in its top-k are dropped
and the first `random_k` (scored) and the next `reference_k` (the explainer's base rates, never
scored) are kept. No excerpt the explainer saw is scored, and none is scored twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from autointerp.activations.data_model import N_BANDS, QUANTILES, is_dead
from autointerp.activations.sampling import excerpt_keys
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.storage.columns import nested_lists as _nested

# Rows per Parquet row group of the neuron_records table: a row is one neuron with every kept
# excerpt's activations (about 14 KB for SmolLM2), so a read of one neuron (the viewer, lineage)
# decodes 32 neurons, not a layer.
RECORDS_ROW_GROUP_ROWS = 32


class StreamingTopK:
    """Per neuron, the k excerpts with the largest key seen so far, with per-token activations.

    Slots are unsorted while streaming: an admitted excerpt overwrites an evicted slot in place, so
    a batch that changes nothing costs one small top-k over keys and no copy of activations.
    """

    def __init__(
        self,
        n_neurons: int,
        k: int,
        length: int,
        *,
        dtype: torch.dtype = torch.float32,
        key_dtype: torch.dtype = torch.float32,
    ) -> None:
        # Activations are kept in the model's dtype: a bfloat16 model's values are exact there,
        # and the records take half the memory of float32 ones.
        self.k = k
        self.keys = torch.full((n_neurons, k), -torch.inf, dtype=key_dtype)
        self.ids = torch.full((n_neurons, k), -1, dtype=torch.int64)
        self.acts = torch.zeros((n_neurons, k, length), dtype=dtype)

    def update(self, keys: torch.Tensor, acts: torch.Tensor, ids: torch.Tensor) -> None:
        """keys: [neurons, batch]; acts: [batch, tokens, neurons]; ids: [batch]."""
        # Only neurons with a key above their current minimum can change: merge just those rows.
        rows = (keys > self.keys.amin(dim=1, keepdim=True)).any(dim=1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        merged = torch.cat([self.keys[rows], keys[rows]], dim=1)
        top = merged.topk(self.k, dim=1).indices
        member = torch.zeros_like(merged, dtype=torch.bool).scatter_(1, top, True)
        admitted = member[:, self.k :].nonzero()
        # Each row evicts as many slots as it admits, and nonzero() lists both row-major, so the
        # i-th evicted slot pairs with the i-th admitted excerpt of the same neuron.
        evicted = (~member[:, : self.k]).nonzero()
        neuron, slot = rows[evicted[:, 0]], evicted[:, 1]
        batch_index = admitted[:, 1]
        self.keys[neuron, slot] = keys[neuron, batch_index]
        self.ids[neuron, slot] = ids[batch_index]
        self.acts[neuron, slot] = acts[batch_index, :, neuron].to(self.acts.dtype)

    def sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, ids, acts) per neuron, largest key first; empty slots have id -1."""
        order = self.keys.argsort(dim=1, descending=True, stable=True)
        keys = self.keys.gather(1, order)
        ids = self.ids.gather(1, order)
        acts = self.acts.gather(1, order[..., None].expand_as(self.acts))
        ids[~torch.isfinite(keys)] = -1
        return keys.numpy(), ids.numpy(), acts.float().numpy()


class Moments:
    """Streaming mean, variance, skewness and kurtosis of every neuron's per-token activations.

    Power sums are taken of values shifted by the first batch's mean, which keeps the float64
    conversion to central moments accurate when a neuron's mean is large next to its spread.
    """

    def __init__(self, n_neurons: int) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sums = torch.zeros((4, n_neurons), dtype=torch.float64)
        self.max = torch.full((n_neurons,), -torch.inf)
        self._buffers: list[torch.Tensor] = []

    def _scratch(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        # Two float32 buffers reused batch after batch: a fresh 12 MB tensor per layer and batch
        # costs more in allocation and page faults than the arithmetic itself.
        if not self._buffers or self._buffers[0].shape != shape:
            self._buffers = [torch.empty(shape), torch.empty(shape)]
        return self._buffers[0], self._buffers[1]

    def update(self, values: torch.Tensor, maxes: torch.Tensor) -> None:
        """values: [tokens, neurons], any float dtype; maxes: [neurons, excerpts]."""
        if self.shift is None:
            self.shift = values.float().mean(dim=0)
        d, d2 = self._scratch(values.shape)
        torch.sub(values, self.shift, out=d)  # converts to float32 on the way
        torch.mul(d, d, out=d2)
        self.sums[0] += d.sum(dim=0)
        self.sums[1] += d2.sum(dim=0)
        self.sums[2] += d.mul_(d2).sum(dim=0)
        self.sums[3] += d2.mul_(d2).sum(dim=0)
        self.count += values.shape[0]
        self.max = torch.maximum(self.max, maxes.amax(dim=1))

    def result(self) -> dict[str, np.ndarray]:
        """mean, variance (population), skewness, kurtosis (excess, 0 for a normal)."""
        n = max(self.count, 1)
        s1, s2, s3, s4 = (self.sums[i] / n for i in range(4))
        m2 = (s2 - s1**2).clamp(min=0)
        m3 = s3 - 3 * s1 * s2 + 2 * s1**3
        m4 = s4 - 4 * s1 * s3 + 6 * s1**2 * s2 - 3 * s1**4
        safe = m2 > 1e-12  # a constant neuron has no defined shape: NaN, not inf
        nan = torch.full_like(m2, torch.nan)
        shift = self.shift.double() if self.shift is not None else torch.zeros_like(m2)
        return {
            "mean": (shift + s1).numpy(),
            "variance": m2.numpy(),
            "skewness": torch.where(safe, m3 / m2.clamp(min=1e-12) ** 1.5, nan).numpy(),
            "kurtosis": torch.where(safe, m4 / m2.clamp(min=1e-12) ** 2 - 3, nan).numpy(),
            "max_activation": self.max.double().numpy(),
        }


def neuron_keys(excerpt_ids: np.ndarray, layer: int, n_neurons: int, seed: int) -> np.ndarray:
    """[neurons, excerpts] uniform [0, 1) keys: a seeded hash of (layer, neuron, excerpt id), so
    every neuron draws its own random sample, the same on every run and for any batch size."""
    neurons = np.arange(n_neurons, dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        mixed = excerpt_ids.astype(np.uint64)[None, :] + neurons * np.uint64(0xD1B54A32D192ED03)
        mixed = mixed + np.uint64(layer) * np.uint64(0xAEF17502108EF2D9)
    return excerpt_keys(mixed, seed)


@dataclass
class SamplingPlan:
    """The order in which excerpts are processed, fixed before the pass from seeded keys.

    The boundary pool (the excerpts with the smallest keys) is processed first: its maxima give
    each neuron's quantile boundaries, after which quantile-band samples are drawn from the rest.
    """

    order: np.ndarray  # row indices in processing order: pool first
    pool_size: int
    keys: np.ndarray  # per row

    @classmethod
    def build(cls, excerpt_ids: np.ndarray, spec: RecordsSpec) -> SamplingPlan:
        keys = excerpt_keys(excerpt_ids, spec.seed)
        by_key = np.argsort(keys, kind="stable")
        # Leave at least half the corpus for the band samples, which exclude the pool.
        pool_size = min(spec.boundary_pool, max(1, len(excerpt_ids) // 2))
        pool = by_key[:pool_size]
        rest = np.setdiff1d(np.arange(len(excerpt_ids)), pool, assume_unique=True)
        return cls(order=np.concatenate([pool, rest]), pool_size=pool_size, keys=keys)


class TokenMeans:
    """Per neuron, the mean activation on each distinct token of the corpus (for the token-list
    explainer); memory: distinct tokens × neurons × 4 bytes."""

    def __init__(self, vocabulary: np.ndarray, n_neurons: int) -> None:
        self.vocabulary = vocabulary  # the corpus's distinct token ids, sorted
        self.sums = torch.zeros((len(vocabulary), n_neurons))
        self.counts = torch.zeros(len(vocabulary), dtype=torch.int64)

    def update(self, acts: torch.Tensor, token_ids: np.ndarray) -> None:
        """acts: [batch, tokens, neurons]; token_ids: [batch, tokens]."""
        index = torch.from_numpy(np.searchsorted(self.vocabulary, token_ids.ravel()))
        self.sums.index_add_(0, index, acts.reshape(-1, acts.shape[-1]).float())
        self.counts.index_add_(0, index, torch.ones_like(index))

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """([neurons, k] token ids, [neurons, k] means), highest mean first."""
        means = self.sums / self.counts.clamp(min=1)[:, None]
        values, rows = means.topk(min(k, len(self.vocabulary)), dim=0)
        return self.vocabulary[rows.T.numpy()], values.T.numpy()


class LayerRecords:
    """All accumulators of one layer."""

    def __init__(
        self,
        layer: int,
        n_neurons: int,
        length: int,
        plan: SamplingPlan,
        spec: RecordsSpec,
        *,
        dtype: torch.dtype = torch.float32,
        vocabulary: np.ndarray | None = None,
    ):
        self.layer, self.spec, self.plan = layer, spec, plan
        self.top = StreamingTopK(n_neurons, spec.top_k, length, dtype=dtype)
        self.moments = Moments(n_neurons)
        self.bands = [
            StreamingTopK(n_neurons, spec.quantile_k, length, dtype=dtype) for _ in range(N_BANDS)
        ]
        # Enough candidates that random_k + reference_k remain once the top-k are dropped. Keys
        # are float64: float32 would tie distinct hashes, and ties make the draw order-dependent.
        self.random = StreamingTopK(
            n_neurons,
            spec.top_k + spec.random_k + spec.reference_k,
            length,
            dtype=dtype,
            key_dtype=torch.float64,
        )
        self.token_means = (
            TokenMeans(vocabulary, n_neurons)
            if spec.top_mean_tokens and vocabulary is not None
            else None
        )
        self.pool_maxes: list[torch.Tensor] = []
        self.pool_size = plan.pool_size
        self.boundaries: torch.Tensor | None = None  # [neurons, len(QUANTILES)]

    def update(
        self, acts: torch.Tensor, rows: np.ndarray, ids: torch.Tensor, token_ids: np.ndarray
    ) -> None:
        """acts: [batch, tokens, neurons] for corpus rows `rows` (in processing order) with ids
        `ids` and tokens `token_ids`, in the model's dtype: only what is kept is converted."""
        maxes = acts.amax(dim=1).float().T.contiguous()  # [neurons, batch]
        _check_finite(maxes, self.layer, ids)
        self.moments.update(acts.reshape(-1, acts.shape[-1]), maxes)
        self.top.update(maxes, acts, ids)
        keys = neuron_keys(ids.numpy(), self.layer, acts.shape[-1], self.spec.seed)
        self.random.update(torch.from_numpy(-keys), acts, ids)  # the smallest hashes win
        if self.token_means is not None:
            self.token_means.update(acts, token_ids)
        in_pool = sum(m.shape[1] for m in self.pool_maxes)
        n_pool = max(0, min(len(rows), self.pool_size - in_pool))
        if n_pool:
            self.pool_maxes.append(maxes[:, :n_pool])
            if in_pool + n_pool == self.pool_size:
                pool = torch.cat(self.pool_maxes, dim=1)
                self.boundaries = torch.quantile(pool, torch.tensor(QUANTILES), dim=1).T
        if self.boundaries is not None and n_pool < len(rows):
            self._update_bands(maxes[:, n_pool:], acts[n_pool:], ids[n_pool:], rows[n_pool:])

    def _update_bands(self, maxes, acts, ids, rows) -> None:
        priority = -torch.from_numpy(self.plan.keys[rows]).float()[None, :]
        lower = self.boundaries.clone()
        lower[:, 0] = -torch.inf  # band 0 also takes excerpts below the pool's minimum
        for band, sampler in enumerate(self.bands):
            inside = (maxes >= lower[:, band : band + 1]) & (maxes < lower[:, band + 1 : band + 2])
            sampler.update(torch.where(inside, priority, -torch.inf), acts, ids)

    def _random_samples(self, top_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each neuron's candidates outside its top-k, smallest hash first: (ids, acts, kept)
        with `kept` [neurons, random_k + reference_k] marking the slots that hold one."""
        _, ids, acts = self.random.sorted()
        allowed = (ids >= 0) & ~(ids[:, :, None] == top_ids[:, None, :]).any(axis=2)
        wanted = self.spec.random_k + self.spec.reference_k
        order = np.argsort(~allowed, axis=1, kind="stable")[:, :wanted]
        return (
            np.take_along_axis(ids, order, axis=1),
            np.take_along_axis(acts, order[..., None], axis=1),
            np.take_along_axis(allowed, order, axis=1),
        )

    def frame(self, excerpt_ids: np.ndarray) -> pl.DataFrame:
        """One row per neuron, the REFERENCE.md NeuronRecord as columns."""
        top_keys, top_ids, top_acts = self.top.sorted()
        n_neurons, length = top_ids.shape[0], top_acts.shape[2]
        top_valid = top_ids >= 0
        random_ids, random_acts, random_valid = self._random_samples(top_ids)
        k = self.spec.random_k
        bands = [band.sorted() for band in self.bands]
        band_ids = np.stack([ids for _, ids, _ in bands], axis=1)  # [neurons, bands, k]
        band_acts = np.stack([acts for _, _, acts in bands], axis=1)  # [neurons, bands, k, tokens]
        band_valid = band_ids >= 0
        per_band = band_valid.sum(axis=2).ravel()
        bounds = (
            self.boundaries.double().numpy()
            if self.boundaries is not None
            else np.full((n_neurons, len(QUANTILES)), np.nan)
        )
        stats = self.moments.result()
        rows = np.full(n_neurons, 1)
        columns = {
            "layer": pl.Series([self.layer] * n_neurons, dtype=pl.Int32),
            "neuron": pl.Series(np.arange(n_neurons), dtype=pl.Int32),
            **{name: pl.Series(values, dtype=pl.Float64) for name, values in stats.items()},
            "quantile_boundaries": _nested(bounds.ravel(), rows * len(QUANTILES)),
            "top_excerpt_ids": _nested(top_ids[top_valid], top_valid.sum(1)),
            "top_max_activations": _nested(top_keys[top_valid], top_valid.sum(1)),
            "top_activations": _nested(
                top_acts[top_valid].ravel(), np.full(top_valid.sum(), length), top_valid.sum(1)
            ),
            **_samples("random", random_ids[:, :k], random_acts[:, :k], random_valid[:, :k]),
            **_samples("reference", random_ids[:, k:], random_acts[:, k:], random_valid[:, k:]),
            "quantile_excerpt_ids": _nested(band_ids[band_valid], per_band, rows * N_BANDS),
            "quantile_activations": _nested(
                band_acts[band_valid].ravel(),
                np.full(band_valid.sum(), length),
                per_band,
                rows * N_BANDS,
            ),
        }
        if self.token_means is not None:
            token_ids, means = self.token_means.top(self.spec.top_mean_tokens)
            columns["top_mean_token_ids"] = _nested(
                token_ids.astype(np.int32).ravel(), np.full(n_neurons, token_ids.shape[1])
            )
            columns["top_mean_token_means"] = _nested(
                means.ravel(), np.full(n_neurons, means.shape[1])
            )
        return pl.DataFrame(columns)


def _samples(name: str, ids: np.ndarray, acts: np.ndarray, valid: np.ndarray) -> dict:
    """`<name>_excerpt_ids` and `<name>_activations` columns from [neurons, k] slots."""
    length = acts.shape[2]
    return {
        f"{name}_excerpt_ids": _nested(ids[valid], valid.sum(1)),
        f"{name}_activations": _nested(
            acts[valid].ravel(), np.full(valid.sum(), length), valid.sum(1)
        ),
    }


def _check_finite(maxes: torch.Tensor, layer: int, ids: torch.Tensor) -> None:
    """A NaN or infinite activation is a broken model or dtype, never an empty slot."""
    finite = torch.isfinite(maxes)
    if bool(finite.all()):
        return
    neuron, column = (~finite).nonzero()[0].tolist()
    raise InputError(
        f"non-finite activation in layer {layer}, neuron {neuron}, excerpt {int(ids[column])}: "
        'the model overflowed in its dtype; try dtype = "float32" (or "bfloat16") in its '
        "[models] section"
    )


def records_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per layer: neurons, how many never fire (`is_dead`), and the spread of max activations."""
    return (
        records.group_by("layer")
        .agg(
            neurons=pl.len(),
            dead=is_dead(pl.col("max_activation")).sum(),
            max_act_median=pl.col("max_activation").median(),
            max_act_p90=pl.col("max_activation").quantile(0.9),
            max_act_max=pl.col("max_activation").max(),
            kurtosis_median=pl.col("kurtosis").median(),
        )
        .sort("layer")
    )
