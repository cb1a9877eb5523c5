"""Streaming neuron records: per neuron, the top-k excerpts, random and quantile-band samples, and
moments of the activation distribution.

Everything here is a fixed-size accumulator updated batch by batch, so memory is bounded by
neurons × kept excerpts × excerpt length, whatever the corpus size. Every sample is chosen by a key
(the excerpt's maximum activation for top-k, a seeded hash of the excerpt id for the random
samples), so results are deterministic and the per-shard results of a split corpus merge exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from autointerp.activations.sampling import excerpt_keys
from autointerp.config.settings import RecordsSpec

# Quantile band edges of an excerpt's maximum activation (REFERENCE.md): [0,.5], [.5,.9], [.9,.99],
# [.99,.999]. Shown in the viewer; not used for scoring.
QUANTILES = (0.0, 0.5, 0.9, 0.99, 0.999)
N_BANDS = len(QUANTILES) - 1


class StreamingTopK:
    """Per neuron, the k excerpts with the largest key seen so far, with per-token activations.

    Slots are unsorted while streaming: an admitted excerpt overwrites an evicted slot in place, so
    a batch that changes nothing costs one small top-k over keys and no copy of activations.
    """

    def __init__(self, n_neurons: int, k: int, length: int) -> None:
        self.k = k
        self.keys = torch.full((n_neurons, k), -torch.inf)
        self.ids = torch.full((n_neurons, k), -1, dtype=torch.int64)
        self.acts = torch.zeros((n_neurons, k, length))

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
        self.acts[neuron, slot] = acts[batch_index, :, neuron].float()

    def sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, ids, acts) per neuron, largest key first; empty slots have id -1."""
        order = self.keys.argsort(dim=1, descending=True, stable=True)
        keys = self.keys.gather(1, order)
        ids = self.ids.gather(1, order)
        acts = self.acts.gather(1, order[..., None].expand_as(self.acts))
        ids[~torch.isfinite(keys)] = -1
        return keys.numpy(), ids.numpy(), acts.numpy()


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


@dataclass
class SamplingPlan:
    """Which excerpts play which role, fixed before the pass from seeded keys of the excerpt ids.

    The boundary pool (the excerpts with the smallest keys) is processed first: its maxima give
    each neuron's quantile boundaries, after which quantile-band samples are drawn from the rest.
    The random sample is the random_k smallest keys.
    """

    order: np.ndarray  # row indices in processing order: pool first
    pool_size: int
    random_rows: np.ndarray  # row indices of the random sample, in key order
    keys: np.ndarray  # per row

    @classmethod
    def build(cls, excerpt_ids: np.ndarray, spec: RecordsSpec) -> SamplingPlan:
        keys = excerpt_keys(excerpt_ids, spec.seed)
        by_key = np.argsort(keys, kind="stable")
        # Leave at least half the corpus for the band samples, which exclude the pool.
        pool_size = min(spec.boundary_pool, max(1, len(excerpt_ids) // 2))
        pool = by_key[:pool_size]
        rest = np.setdiff1d(np.arange(len(excerpt_ids)), pool, assume_unique=True)
        return cls(
            order=np.concatenate([pool, rest]),
            pool_size=pool_size,
            random_rows=by_key[: spec.random_k],
            keys=keys,
        )


class LayerRecords:
    """All accumulators of one layer."""

    def __init__(self, n_neurons: int, length: int, plan: SamplingPlan, spec: RecordsSpec):
        self.top = StreamingTopK(n_neurons, spec.top_k, length)
        self.moments = Moments(n_neurons)
        self.bands = [StreamingTopK(n_neurons, spec.quantile_k, length) for _ in range(N_BANDS)]
        self.random_slot = {int(row): i for i, row in enumerate(plan.random_rows)}
        self.random_acts = torch.zeros((len(plan.random_rows), length, n_neurons))
        self.pool_maxes: list[torch.Tensor] = []
        self.pool_size = plan.pool_size
        self.boundaries: torch.Tensor | None = None  # [neurons, len(QUANTILES)]
        self.plan = plan

    def update(self, acts: torch.Tensor, rows: np.ndarray, ids: torch.Tensor) -> None:
        """acts: [batch, tokens, neurons] for corpus rows `rows` (in processing order), in the
        model's dtype: only what is kept is converted to float32."""
        maxes = acts.amax(dim=1).float().T.contiguous()  # [neurons, batch]
        self.moments.update(acts.reshape(-1, acts.shape[-1]), maxes)
        self.top.update(maxes, acts, ids)
        for i, row in enumerate(rows):
            slot = self.random_slot.get(int(row))
            if slot is not None:
                self.random_acts[slot] = acts[i]
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

    def frame(self, layer: int, excerpt_ids: np.ndarray) -> pl.DataFrame:
        """One row per neuron, the REFERENCE.md NeuronRecord as columns."""
        top_keys, top_ids, top_acts = self.top.sorted()
        n_neurons, length = top_ids.shape[0], top_acts.shape[2]
        top_valid = top_ids >= 0
        n_random = len(self.plan.random_rows)
        random_ids = np.tile(excerpt_ids[self.plan.random_rows], n_neurons)
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
        return pl.DataFrame(
            {
                "layer": pl.Series([layer] * n_neurons, dtype=pl.Int32),
                "neuron": pl.Series(np.arange(n_neurons), dtype=pl.Int32),
                **{name: pl.Series(values, dtype=pl.Float64) for name, values in stats.items()},
                "quantile_boundaries": _nested(bounds.ravel(), rows * len(QUANTILES)),
                "top_excerpt_ids": _nested(top_ids[top_valid], top_valid.sum(1)),
                "top_max_activations": _nested(top_keys[top_valid], top_valid.sum(1)),
                "top_activations": _nested(
                    top_acts[top_valid].ravel(), np.full(top_valid.sum(), length), top_valid.sum(1)
                ),
                "random_excerpt_ids": _nested(random_ids, rows * n_random),
                "random_activations": _nested(
                    self.random_acts.permute(2, 0, 1).numpy().ravel(),
                    np.full(n_neurons * n_random, length),
                    rows * n_random,
                ),
                "quantile_excerpt_ids": _nested(band_ids[band_valid], per_band, rows * N_BANDS),
                "quantile_activations": _nested(
                    band_acts[band_valid].ravel(),
                    np.full(band_valid.sum(), length),
                    per_band,
                    rows * N_BANDS,
                ),
            }
        )


def _nested(flat: np.ndarray, *lengths: np.ndarray) -> pl.Series:
    """Nested lists from flat values and the length of every list, innermost level first.

    Built through Arrow offsets: a Python list per neuron would dominate the write time.
    """
    array = pa.array(np.ascontiguousarray(flat))
    for length in lengths:
        offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int32)
        array = pa.ListArray.from_arrays(pa.array(offsets), array)
    return pl.Series(array)


def records_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per layer: neurons, how many never fire (max <= 0), and the spread of max activations."""
    return (
        records.group_by("layer")
        .agg(
            neurons=pl.len(),
            dead=(pl.col("max_activation") <= 0).sum(),
            max_act_median=pl.col("max_activation").median(),
            max_act_p90=pl.col("max_activation").quantile(0.9),
            max_act_max=pl.col("max_activation").max(),
            kurtosis_median=pl.col("kurtosis").median(),
        )
        .sort("layer")
    )
