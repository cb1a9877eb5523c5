"""Streaming neuron records against brute-force answers on synthetic activations."""

import numpy as np
import polars as pl
import pytest
import torch

from autointerp.activations.neuron_records import (
    QUANTILES,
    Entries,
    LayerRecords,
    Moments,
    SamplingPlan,
    Scratch,
    StreamingTopK,
)
from autointerp.activations.partial_records import records_frame
from autointerp.activations.sampling import excerpt_keys, neuron_keys
from autointerp.activations.splits import split_records
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError

N_EXCERPTS, LENGTH, NEURONS = 120, 8, 6


@pytest.fixture
def activations() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((N_EXCERPTS, LENGTH, NEURONS)).astype(np.float32)


def stream(acts: np.ndarray, spec: RecordsSpec, batch: int) -> pl.DataFrame:
    excerpt_ids = np.arange(100, 100 + len(acts))  # ids need not be row numbers
    plan = SamplingPlan.build(excerpt_ids, spec)
    tokens = np.arange(len(acts) * acts.shape[1]).reshape(len(acts), -1) % 7  # 7 token ids
    layer = LayerRecords(3, acts.shape[2], acts.shape[1], plan, spec, vocabulary=np.arange(7))
    for rows in plan.batches(batch):
        ids = torch.from_numpy(excerpt_ids[rows])
        layer.update(torch.from_numpy(acts[rows]), rows, ids, tokens[rows])
    return records_frame(layer.partial(), spec)


def test_streaming_top_k_matches_brute_force(activations):
    top = StreamingTopK(NEURONS, 5, LENGTH)
    maxes = activations.max(axis=1)  # [excerpts, neurons]
    for start in range(0, N_EXCERPTS, 7):
        chunk = slice(start, start + 7)
        top.update(
            torch.from_numpy(maxes[chunk].T.copy()),
            torch.from_numpy(activations[chunk]),
            torch.arange(N_EXCERPTS)[chunk],
        )
    keys, ids, acts = top.sorted()
    for n in range(NEURONS):
        expected = np.argsort(-maxes[:, n])[:5]
        assert ids[n].tolist() == expected.tolist()
        np.testing.assert_allclose(keys[n], maxes[expected, n])
        np.testing.assert_array_equal(acts[n], activations[expected, :, n])


def test_offered_entries_keep_the_best_k_per_neuron():
    # Entries arrive in any order, several for one neuron, none for another.
    rng = np.random.default_rng(1)
    m, k = 60, 4
    neurons = torch.from_numpy(rng.integers(0, NEURONS - 1, m))
    keys = torch.from_numpy(rng.integers(0, 10, m).astype(np.float32))  # ties: smaller id wins
    ids = torch.from_numpy(rng.permutation(m))
    acts = torch.from_numpy(rng.standard_normal((m, LENGTH)).astype(np.float32))
    top = StreamingTopK(NEURONS, k, LENGTH)
    for part in np.array_split(np.arange(m), 5):
        index = torch.from_numpy(part)
        top.offer(Entries(neurons[index], ids[index], acts[index]), keys[index])
    got_keys, got_ids, got_acts = top.sorted()
    for n in range(NEURONS):
        mine = [i for i in range(m) if neurons[i] == n]
        best = sorted(mine, key=lambda i: (-keys[i].item(), ids[i].item()))[:k]
        assert got_ids[n][: len(best)].tolist() == [ids[i].item() for i in best]
        assert (got_ids[n][len(best) :] == -1).all()
        np.testing.assert_array_equal(got_keys[n][: len(best)], keys[best].numpy())
        np.testing.assert_array_equal(got_acts[n][: len(best)], acts[best].numpy())


def test_every_excerpt_is_turned_away_let_go_or_kept_exactly_once(activations):
    # What the random sample relies on: each excerpt leaves the top-k once, or is in it at the end.
    top = StreamingTopK(NEURONS, 5, LENGTH, reports_let_go=True)
    maxes = activations.max(axis=1)
    out: dict[int, list[int]] = {n: [] for n in range(NEURONS)}
    for start in range(0, N_EXCERPTS, 7):
        rows = np.arange(start, min(start + 7, N_EXCERPTS))
        turnover = top.update(
            torch.from_numpy(maxes[rows].T.copy()),
            torch.from_numpy(activations[rows]),
            torch.from_numpy(rows),
        )
        admitted = set(zip(turnover.neurons.tolist(), turnover.columns.tolist(), strict=True))
        for n in range(NEURONS):
            out[n] += [int(r) for c, r in enumerate(rows) if (n, c) not in admitted]
        let_go = turnover.let_go
        for neuron, excerpt, acts in zip(let_go.neurons, let_go.ids, let_go.acts, strict=True):
            out[int(neuron)].append(int(excerpt))
            np.testing.assert_array_equal(acts.numpy(), activations[excerpt, :, neuron])
    _, kept, _ = top.sorted()
    for n in range(NEURONS):
        assert sorted(out[n] + kept[n].tolist()) == list(range(N_EXCERPTS))


def test_moments_match_numpy(activations):
    moments = Moments(NEURONS)
    flat = activations.reshape(-1, NEURONS) * 3 + 50  # a large mean tests the shifted sums
    for chunk in np.array_split(flat, 9):
        moments.update(torch.from_numpy(chunk), torch.from_numpy(chunk).amax(0, keepdim=True).T)
    got = moments.result()
    x = flat.astype(np.float64)
    mean, var = x.mean(0), x.var(0)
    z = (x - mean) / np.sqrt(var)
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(got["variance"], var, rtol=1e-4)
    np.testing.assert_allclose(got["skewness"], (z**3).mean(0), atol=1e-3)
    np.testing.assert_allclose(got["kurtosis"], (z**4).mean(0) - 3, atol=1e-3)
    np.testing.assert_allclose(got["max_activation"], x.max(0), rtol=1e-6)


def test_moments_sharing_one_scratch_match_moments_with_their_own(activations):
    # A pass's layers share one scratch pair, their updates interleaved batch by batch.
    flat = activations.reshape(-1, NEURONS)
    shared = Scratch()
    together = [Moments(NEURONS, shared), Moments(NEURONS, shared)]
    alone = [Moments(NEURONS), Moments(NEURONS)]
    for chunk in np.array_split(flat, 5):
        for i, moments in enumerate([*together, *alone]):
            values = torch.from_numpy(chunk * (i % 2 + 1))
            moments.update(values, values.amax(0, keepdim=True).T)
    assert together[0].scratch is together[1].scratch is shared
    for a, b in zip(together, alone, strict=True):
        for name, value in a.result().items():
            np.testing.assert_array_equal(value, b.result()[name])


def test_constant_neuron_has_nan_shape():
    moments = Moments(1)
    moments.update(torch.ones(10, 1), torch.ones(1, 1))
    got = moments.result()
    assert got["variance"][0] == 0 and np.isnan(got["skewness"][0]) and np.isnan(got["kurtosis"][0])


def test_records_independent_of_batch_size(activations):
    spec = RecordsSpec(top_k=5, random_k=4, quantile_k=2, boundary_pool=40, top_mean_tokens=3)
    small, large = stream(activations, spec, 3), stream(activations, spec, 17)
    moments = ["mean", "variance", "skewness", "kurtosis"]
    assert small.drop(moments).equals(large.drop(moments))  # every chosen excerpt, exactly
    for name in moments:  # float32 partial sums differ only in rounding
        np.testing.assert_allclose(small[name], large[name], rtol=1e-4, atol=1e-6)


def test_record_contents(activations):
    spec = RecordsSpec(
        top_k=5,
        random_k=4,
        reference_k=3,
        quantile_k=2,
        boundary_pool=40,
        seed=7,
        top_mean_tokens=2,
    )
    frame = stream(activations, spec, 9)
    excerpt_ids = np.arange(100, 100 + N_EXCERPTS)
    keys = excerpt_keys(excerpt_ids, 7)
    own_keys = neuron_keys(excerpt_ids[None, :], np.arange(NEURONS)[:, None], 3, 7)
    tokens = np.arange(N_EXCERPTS * LENGTH).reshape(N_EXCERPTS, LENGTH) % 7
    by_key = np.argsort(keys)
    pool, rest = set(by_key[:40]), [r for r in range(N_EXCERPTS) if r not in set(by_key[:40])]
    maxes = activations.max(axis=1)
    assert frame.height == NEURONS and (frame["layer"] == 3).all()
    for n, row in enumerate(frame.iter_rows(named=True)):
        assert row["neuron"] == n
        top_rows = np.argsort(-maxes[:, n])[:5]
        assert row["top_excerpt_ids"] == (top_rows + 100).tolist()
        np.testing.assert_allclose(row["top_max_activations"], maxes[top_rows, n], rtol=1e-6)
        # Random samples: the neuron's own smallest seeded keys, outside its top-k; the first
        # random_k are scored, the next reference_k are the baseline explainer's base rates.
        drawn = [r for r in np.argsort(own_keys[n]) if r not in set(top_rows)][:7]
        assert row["random_excerpt_ids"] == [r + 100 for r in drawn[:4]]
        assert row["reference_excerpt_ids"] == [r + 100 for r in drawn[4:]]
        np.testing.assert_array_equal(
            np.array(row["random_activations"]), activations[drawn[:4], :, n]
        )
        # The tokens with the highest mean activation over the whole corpus, highest first.
        means = [activations[:, :, n][tokens == t].mean() for t in range(7)]
        assert row["top_mean_token_ids"] == np.argsort(means)[::-1][:2].tolist()
        np.testing.assert_allclose(row["top_mean_token_means"], sorted(means)[::-1][:2], rtol=1e-5)
        # Boundaries are quantiles of the pool's maxima; band samples come from outside the pool,
        # lie inside their band, and are the in-band excerpts with the smallest keys.
        bounds = np.quantile(maxes[sorted(pool), n], QUANTILES)
        np.testing.assert_allclose(row["quantile_boundaries"], bounds, rtol=1e-5)
        lower = [-np.inf, *bounds[1:-1]]
        for band, ids in enumerate(row["quantile_excerpt_ids"]):
            inside = [r for r in rest if lower[band] <= maxes[r, n] < bounds[band + 1]]
            expected = sorted(inside, key=lambda r: keys[r])[:2]
            assert ids == [r + 100 for r in expected]
            acts = np.array(row["quantile_activations"][band]).reshape(-1, LENGTH)
            np.testing.assert_array_equal(acts, activations[expected, :, n].reshape(-1, LENGTH))


def test_excerpt_keys_are_uniform_and_seeded():
    ids = np.arange(20_000)
    keys = excerpt_keys(ids, 0)
    assert keys.min() >= 0 and keys.max() < 1 and abs(keys.mean() - 0.5) < 0.01
    assert not np.array_equal(keys, excerpt_keys(ids, 1))
    np.testing.assert_array_equal(keys, excerpt_keys(ids, 0))


def test_reference_splits(activations):
    spec = RecordsSpec(top_k=20, random_k=15, quantile_k=2, boundary_pool=40)
    splits = split_records(stream(activations, spec, 16))
    counts = splits.group_by("neuron", "split", "kind").len()
    per = {(r["split"], r["kind"]): r["len"] for r in counts.filter(neuron=0).iter_rows(named=True)}
    assert per == {
        ("train", "top"): 5,
        ("train", "random"): 10,  # the reference sample: the baseline's base rates, never scored
        **{(s, k): 5 for s in ("calibration", "valid", "test") for k in ("top", "random")},
    }
    top = splits.filter(neuron=0, kind="top").sort("rank")
    assert top.filter(split="train")["rank"].to_list() == [0, 4, 8, 12, 16]
    assert top.filter(split="test")["rank"].to_list() == [3, 7, 11, 15, 19]
    scored = pl.col("split").is_in(["calibration", "valid", "test"])
    rand = splits.filter(scored, neuron=0, kind="random").sort("rank")
    assert rand.filter(split="valid")["rank"].to_list() == [1, 4, 7, 10, 13]
    row = splits.row(0, named=True)
    assert row["max_activation"] == pytest.approx(max(row["activations"]))


def test_scoring_splits_stay_one_to_one(activations):
    spec = RecordsSpec(top_k=24, random_k=9, quantile_k=1, boundary_pool=40)
    splits = split_records(stream(activations, spec, 16))
    scoring = splits.filter(pl.col("split") != "train").group_by("neuron", "split", "kind").len()
    assert set(scoring["len"].to_list()) == {3}


def test_every_neuron_is_scored_on_excerpts_it_was_not_explained_with(activations):
    """Within a neuron no excerpt is in two splits, and none is twice in one scored set."""
    spec = RecordsSpec(top_k=20, random_k=15, quantile_k=2, boundary_pool=40)
    splits = split_records(stream(activations, spec, 16))
    per_neuron = splits.group_by("neuron").agg(
        rows=pl.len(), distinct=pl.col("excerpt_id").n_unique()
    )
    assert (per_neuron["rows"] == per_neuron["distinct"]).all()
    drawn = splits.filter(kind="random").group_by("neuron").agg(pl.col("excerpt_id"))
    assert len({tuple(ids) for ids in drawn["excerpt_id"]}) == NEURONS  # a sample per neuron


def test_non_finite_activations_fail_with_layer_and_excerpt(activations):
    broken = activations.copy()
    broken[7, 2, 4] = np.nan
    with pytest.raises(InputError, match=r"layer 3, neuron 4, excerpt 107"):
        stream(broken, RecordsSpec(top_k=5, random_k=4, quantile_k=2, boundary_pool=40), 9)
