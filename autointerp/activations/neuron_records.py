"""Streaming neuron records: per neuron, the top-k excerpts, random and quantile-band samples, the
tokens with the highest mean activation, and moments of the activation distribution.

Everything here is a fixed-size accumulator updated batch by batch, so memory is bounded by
neurons × kept excerpts × excerpt length, whatever the corpus size. Every sample is chosen by a key
(the excerpt's maximum activation for top-k; a seeded hash of the excerpt id, and of the neuron for
the random samples), ties broken by the smaller excerpt id, so results are deterministic, do not
depend on the batch size, and the per-shard results of a split corpus merge exactly
(`partial_records`).

Random records are drawn per neuron, from outside its top-k: the excerpts with the smallest hash
of (seed, layer, neuron, excerpt) among those the top-k never kept or let go, the first `random_k`
scored and the next `reference_k` the explainer's base rates (never scored). The top-k admit only
new excerpts, so an excerpt is offered to the random sample once it is out of the top-k for good:
the pass holds exactly the excerpts it will write, no spare candidates. No excerpt the explainer
saw is scored, and none is scored twice.

A corpus shard is one contiguous run of its excerpts (`Shard`). Every shard first runs the
boundary pool (the excerpts with the smallest seeded keys, wherever they lie) to estimate the
same quantile boundaries, then its own excerpts; pool excerpts count towards the samples and
moments of the shard that holds them only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from autointerp.activations.data_model import N_BANDS, QUANTILES, is_dead
from autointerp.activations.partial_records import CentralMoments, PartialRecords, Slots
from autointerp.activations.sampling import excerpt_keys, neuron_keys
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError

# Rows per Parquet row group of the neuron_records table: a row is one neuron with every kept
# excerpt's activations (about 14 KB for SmolLM2), so a read of one neuron (the viewer, lineage)
# decodes 32 neurons, not a layer.
RECORDS_ROW_GROUP_ROWS = 32


@dataclass
class Entries:
    """Excerpts of several neurons, one per entry: neuron [m], excerpt id [m], activations
    [m, tokens]."""

    neurons: torch.Tensor
    ids: torch.Tensor
    acts: torch.Tensor


@dataclass
class Turnover:
    """What one update of a StreamingTopK changed: the candidates it admitted (neuron and
    candidate column, per admission) and the excerpts it let go to make room."""

    neurons: torch.Tensor
    columns: torch.Tensor
    let_go: Entries

    @classmethod
    def none(cls, length: int, dtype: torch.dtype) -> Turnover:
        empty = torch.zeros(0, dtype=torch.int64)
        return cls(empty, empty, Entries(empty, empty, torch.zeros((0, length), dtype=dtype)))


class StreamingTopK:
    """Per neuron, the k excerpts ranked best so far (largest key, then smallest excerpt id),
    with per-token activations.

    Slots are unsorted while streaming: an admitted excerpt overwrites an evicted slot in place, so
    a batch that changes nothing costs one comparison with each neuron's floor and no copy.
    `reports_let_go`: whether each update's turnover carries the excerpts it let go (a copy of
    their activations, made only where someone reads them).
    """

    def __init__(
        self,
        n_neurons: int,
        k: int,
        length: int,
        *,
        dtype: torch.dtype = torch.float32,
        key_dtype: torch.dtype = torch.float32,
        reports_let_go: bool = False,
    ) -> None:
        # Activations are kept in the model's dtype: a bfloat16 model's values are exact there,
        # and the records take half the memory of float32 ones.
        self.k, self.reports_let_go = k, reports_let_go
        self.keys = torch.full((n_neurons, k), -torch.inf, dtype=key_dtype)
        self.ids = torch.full((n_neurons, k), -1, dtype=torch.int64)
        self.acts = torch.zeros((n_neurons, k, length), dtype=dtype)

    def update(self, keys: torch.Tensor, acts: torch.Tensor, ids: torch.Tensor) -> Turnover:
        """keys: [neurons, batch]; acts: [batch, tokens, neurons]; ids: [batch]."""
        if self.k == 0:
            return Turnover.none(acts.shape[1], acts.dtype)
        # Only neurons with a finite key at or above their current floor can change (at the
        # floor, a smaller id wins the tie): merge just those rows.
        floor = self.keys.amin(dim=1, keepdim=True)
        rows = ((keys >= floor) & torch.isfinite(keys)).any(dim=1).nonzero().squeeze(1)
        return self._merge(
            rows,
            keys[rows],
            ids.expand(len(rows), -1),
            lambda row, column: acts[column, :, rows[row]],
        )

    def offer(self, entries: Entries, keys: torch.Tensor) -> None:
        """Candidates one by one, several per neuron allowed: `entries` with their `keys` [m]."""
        if self.k == 0 or entries.ids.numel() == 0:
            return
        rows, row_of, counts = torch.unique(
            entries.neurons, return_inverse=True, return_counts=True
        )
        # Lay the candidates out as [rows, widest row], padded with keys that admit nothing.
        order = torch.argsort(row_of, stable=True)
        column = torch.empty_like(order)
        column[order] = torch.arange(len(order)) - (counts.cumsum(0) - counts)[row_of[order]]
        shape = (len(rows), int(counts.max()))
        padded_keys = torch.full(shape, -torch.inf, dtype=self.keys.dtype)
        padded_ids = torch.full(shape, -1, dtype=torch.int64)
        entry = torch.zeros(shape, dtype=torch.int64)
        padded_keys[row_of, column] = keys.to(self.keys.dtype)
        padded_ids[row_of, column] = entries.ids
        entry[row_of, column] = torch.arange(len(order))
        self._merge(rows, padded_keys, padded_ids, lambda row, col: entries.acts[entry[row, col]])

    def _merge(
        self,
        rows: torch.Tensor,
        keys: torch.Tensor,
        ids: torch.Tensor,
        acts_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> Turnover:
        """Merge candidates into the slots of neurons `rows`: keys and ids [rows, candidates];
        `acts_of(row positions, candidate columns)` [m, tokens], the admitted ones' activations."""
        if rows.numel() == 0:
            return Turnover.none(self.acts.shape[2], self.acts.dtype)
        merged = torch.cat([self.keys[rows], keys], dim=1)
        merged_ids = torch.cat([self.ids[rows], ids], dim=1)
        # Best first by key, ties by the smaller id: a stable sort by key after one by id. A
        # padding candidate (no key, id -1) ranks after an empty slot, so it is never admitted.
        by_id = merged_ids.argsort(dim=1, stable=True)
        by_key = merged.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
        top = by_id.gather(1, by_key)[:, : self.k]
        member = torch.zeros_like(merged, dtype=torch.bool).scatter_(1, top, True)
        admitted = member[:, self.k :].nonzero()
        # Each row evicts as many slots as it admits, and nonzero() lists both row-major, so the
        # i-th evicted slot pairs with the i-th admitted excerpt of the same neuron.
        evicted = (~member[:, : self.k]).nonzero()
        neuron, slot = rows[evicted[:, 0]], evicted[:, 1]
        let_go = Turnover.none(self.acts.shape[2], self.acts.dtype).let_go
        if self.reports_let_go:
            held = torch.isfinite(self.keys[neuron, slot])  # an empty slot lets nothing go
            let_go = Entries(
                neuron[held], self.ids[neuron, slot][held], self.acts[neuron, slot][held]
            )
        self.keys[neuron, slot] = keys[admitted[:, 0], admitted[:, 1]]
        self.ids[neuron, slot] = ids[admitted[:, 0], admitted[:, 1]]
        self.acts[neuron, slot] = acts_of(admitted[:, 0], admitted[:, 1]).to(self.acts.dtype)
        return Turnover(neuron, admitted[:, 1], let_go)

    def slots(self) -> Slots:
        """The slots as they are (unsorted); a slot without a finite key is empty (id -1)."""
        ids = self.ids.clone()
        ids[~torch.isfinite(self.keys)] = -1
        return Slots(self.keys.numpy().copy(), ids.numpy(), self.acts.float().numpy())

    def sorted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, ids, acts) per neuron, best first; empty slots have id -1."""
        ranked = self.slots().ranked()
        return ranked.keys, ranked.ids, ranked.acts


class Scratch:
    """Two float32 buffers reused batch after batch. A fresh 12 MB tensor per layer and batch
    costs more in allocation and page faults than the arithmetic itself; one pair shared by every
    layer of a pass (their updates run one after another) keeps a single pair alive, where a pair
    per layer would hold 25 MB per layer for the whole pass."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    def pair(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._buffers or self._buffers[0].shape != shape:
            self._buffers = [torch.empty(shape), torch.empty(shape)]
        return self._buffers[0], self._buffers[1]


class Moments:
    """Streaming mean, variance, skewness and kurtosis of every neuron's per-token activations.

    Power sums are taken of values shifted by the first batch's mean, which keeps the float64
    conversion to central moments accurate when a neuron's mean is large next to its spread.
    `scratch` may be shared with other Moments whose updates never run at the same time.
    """

    def __init__(self, n_neurons: int, scratch: Scratch | None = None) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sums = torch.zeros((4, n_neurons), dtype=torch.float64)
        self.max = torch.full((n_neurons,), -torch.inf)
        self.scratch = scratch or Scratch()

    def update(self, values: torch.Tensor, maxes: torch.Tensor) -> None:
        """values: [tokens, neurons], any float dtype; maxes: [neurons, excerpts]."""
        if self.shift is None:
            self.shift = values.float().mean(dim=0)
        d, d2 = self.scratch.pair(values.shape)
        torch.sub(values, self.shift, out=d)  # converts to float32 on the way
        torch.mul(d, d, out=d2)
        self.sums[0] += d.sum(dim=0)
        self.sums[1] += d2.sum(dim=0)
        self.sums[2] += d.mul_(d2).sum(dim=0)
        self.sums[3] += d2.mul_(d2).sum(dim=0)
        self.count += values.shape[0]
        self.max = torch.maximum(self.max, maxes.amax(dim=1))

    def central(self) -> CentralMoments:
        """Count, mean and central sums (the mergeable form)."""
        n = max(self.count, 1)
        s1, s2, s3, s4 = (self.sums[i] / n for i in range(4))
        shift = self.shift.double() if self.shift is not None else torch.zeros_like(s1)
        return CentralMoments(
            count=self.count,
            mean=(shift + s1).numpy(),
            m2=(n * (s2 - s1**2).clamp(min=0)).numpy(),
            m3=(n * (s3 - 3 * s1 * s2 + 2 * s1**3)).numpy(),
            m4=(n * (s4 - 4 * s1 * s3 + 6 * s1**2 * s2 - 3 * s1**4)).numpy(),
        )

    def result(self) -> dict[str, np.ndarray]:
        """mean, variance (population), skewness, kurtosis (excess, 0 for a normal), max."""
        return self.central().result() | {"max_activation": self.max.double().numpy()}


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the index-th of `count` contiguous runs of the corpus's rows."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise InputError(f"shard {self.index} of {self.count} does not exist")

    def rows(self, n: int) -> np.ndarray:
        """[n] bools: which of a corpus's n rows this shard holds."""
        start, stop = self.index * n // self.count, (self.index + 1) * n // self.count
        held = np.zeros(n, dtype=bool)
        held[start:stop] = True
        return held


@dataclass
class SamplingPlan:
    """The order in which excerpts are processed, fixed before the pass from seeded keys.

    The boundary pool (the excerpts with the smallest keys) is processed first: its maxima give
    each neuron's quantile boundaries, after which quantile-band samples are drawn from the rest.
    A shard's plan runs the whole pool, then the rest of its own rows.
    """

    order: np.ndarray  # row indices in processing order: pool first
    pool_size: int
    keys: np.ndarray  # per row
    held: np.ndarray  # per row: whether the shard holds it (all, in a one-pass plan)

    @classmethod
    def build(
        cls, excerpt_ids: np.ndarray, spec: RecordsSpec, shard: Shard | None = None
    ) -> SamplingPlan:
        keys = excerpt_keys(excerpt_ids, spec.seed)
        by_key = np.argsort(keys, kind="stable")
        # Leave at least half the corpus for the band samples, which exclude the pool.
        pool_size = min(spec.boundary_pool, max(1, len(excerpt_ids) // 2))
        pool = by_key[:pool_size]
        held = (shard or Shard()).rows(len(excerpt_ids))
        rest = np.setdiff1d(np.flatnonzero(held), pool, assume_unique=True)
        return cls(order=np.concatenate([pool, rest]), pool_size=pool_size, keys=keys, held=held)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Row indices per batch, the pool's batches first: no batch mixes pool and rest, so the
        pool runs in the same batches in every shard."""
        for part in (self.order[: self.pool_size], self.order[self.pool_size :]):
            for start in range(0, len(part), size):
                yield part[start : start + size]


class TokenMeans:
    """Per neuron, the sum of activations on each distinct token of the corpus (for the
    token-list explainer); memory: distinct tokens × neurons × 4 bytes."""

    def __init__(self, vocabulary: np.ndarray, n_neurons: int) -> None:
        self.vocabulary = vocabulary  # the corpus's distinct token ids, sorted
        self.sums = torch.zeros((len(vocabulary), n_neurons))
        self.counts = torch.zeros(len(vocabulary), dtype=torch.int64)

    def update(self, acts: torch.Tensor, token_ids: np.ndarray) -> None:
        """acts: [batch, tokens, neurons]; token_ids: [batch, tokens]."""
        index = torch.from_numpy(np.searchsorted(self.vocabulary, token_ids.ravel()))
        self.sums.index_add_(0, index, acts.reshape(-1, acts.shape[-1]).float())
        self.counts.index_add_(0, index, torch.ones_like(index))


class LayerRecords:
    """All accumulators of one layer; `scratch` may be shared with the pass's other layers."""

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
        scratch: Scratch | None = None,
    ):
        self.layer, self.spec, self.plan = layer, spec, plan
        self.n_neurons = n_neurons
        # What the top-k let go is offered to the random sample.
        self.top = StreamingTopK(n_neurons, spec.top_k, length, dtype=dtype, reports_let_go=True)
        self.moments = Moments(n_neurons, scratch)
        self.bands = [
            StreamingTopK(n_neurons, spec.quantile_k, length, dtype=dtype) for _ in range(N_BANDS)
        ]
        # Keys are float64: float32 would tie distinct hashes far more often.
        self.random = StreamingTopK(
            n_neurons,
            spec.random_k + spec.reference_k,
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
        self.boundaries: torch.Tensor | None = None  # [neurons, len(QUANTILES)]

    def update(
        self, acts: torch.Tensor, rows: np.ndarray, ids: torch.Tensor, token_ids: np.ndarray
    ) -> None:
        """acts: [batch, tokens, neurons] for corpus rows `rows` (one batch of
        `SamplingPlan.batches`) with ids `ids` and tokens `token_ids`, in the model's dtype:
        only what is kept is converted."""
        maxes = acts.amax(dim=1).float().T.contiguous()  # [neurons, batch]
        _check_finite(maxes, self.layer, ids)
        if self.boundaries is None:  # a batch of the pool
            self.pool_maxes.append(maxes)
            if sum(m.shape[1] for m in self.pool_maxes) == self.plan.pool_size:
                pool = torch.cat(self.pool_maxes, dim=1)
                self.boundaries = torch.quantile(pool, torch.tensor(QUANTILES), dim=1).T
                self.pool_maxes = []
            held = self.plan.held[rows]
            if not held.any():
                return
            if not held.all():  # pool rows of other shards only estimate the boundaries
                index = torch.from_numpy(np.flatnonzero(held))
                acts, maxes, ids = acts[index], maxes[:, index], ids[index]
                rows, token_ids = rows[held], token_ids[held]
            self._update_samples(acts, maxes, ids, token_ids)
            return
        self._update_samples(acts, maxes, ids, token_ids)
        self._update_bands(maxes, acts, ids, rows)

    def _update_samples(self, acts, maxes, ids, token_ids) -> None:
        self.moments.update(acts.reshape(-1, acts.shape[-1]), maxes)
        turnover = self.top.update(maxes, acts, ids)
        # The random sample is drawn from outside the top-k. An excerpt out of the top-k now never
        # enters it (the top-k admit only new excerpts), so it is offered at once; one in the
        # top-k is offered when the top-k let it go, or never.
        neurons = np.arange(self.n_neurons)[:, None]
        keys = torch.from_numpy(-self._keys(ids.numpy()[None, :], neurons))  # smallest hash wins
        keys[turnover.neurons, turnover.columns] = -torch.inf
        self.random.update(keys, acts, ids)
        let_go = turnover.let_go
        self.random.offer(
            let_go, torch.from_numpy(-self._keys(let_go.ids.numpy(), let_go.neurons.numpy()))
        )
        if self.token_means is not None:
            self.token_means.update(acts, token_ids)

    def _keys(self, excerpt_ids: np.ndarray, neurons: np.ndarray) -> np.ndarray:
        return neuron_keys(excerpt_ids, neurons, self.layer, self.spec.seed)

    def _update_bands(self, maxes, acts, ids, rows) -> None:
        priority = -torch.from_numpy(self.plan.keys[rows]).float()[None, :]
        lower = self.boundaries.clone()
        lower[:, 0] = -torch.inf  # band 0 also takes excerpts below the pool's minimum
        for band, sampler in enumerate(self.bands):
            inside = (maxes >= lower[:, band : band + 1]) & (maxes < lower[:, band + 1 : band + 2])
            sampler.update(torch.where(inside, priority, -torch.inf), acts, ids)

    def partial(self) -> PartialRecords:
        """Every accumulator, in the form that merges with other shards' (`merge_partials`)."""
        bands = [band.slots() for band in self.bands]
        tokens = self.token_means
        return PartialRecords(
            layer=self.layer,
            top=self.top.slots(),
            random=self.random.slots(),
            bands=Slots(
                np.stack([b.keys for b in bands], axis=1),
                np.stack([b.ids for b in bands], axis=1),
                np.stack([b.acts for b in bands], axis=1),
            ),
            moments=self.moments.central(),
            max_activation=self.moments.max.double().numpy(),
            boundaries=(
                self.boundaries.double().numpy()
                if self.boundaries is not None
                else np.full((self.n_neurons, len(QUANTILES)), np.nan)
            ),
            vocabulary=tokens.vocabulary if tokens else None,
            token_sums=tokens.sums.numpy() if tokens else None,
            token_counts=tokens.counts.numpy() if tokens else None,
        )


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
