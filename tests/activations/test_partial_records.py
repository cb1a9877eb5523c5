"""Sharded capture: the partial records of disjoint corpus shards merge into exactly the records
of one pass over the whole corpus."""

import numpy as np
import polars as pl
import pytest
import torch

from autointerp.activations.capture import capture_partials, capture_records
from autointerp.activations.neuron_records import LayerRecords, SamplingPlan, Shard
from autointerp.activations.partial_records import (
    merge_partials,
    partial_frame,
    read_partials,
    records_frame,
)
from autointerp.activations.splits import split_records
from autointerp.activations.subject_model import load_subject_model
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.testing.tiny_models import make_tiny_model, tiny_spec
from tests.activations.test_capture import corpus_frame

N_EXCERPTS, LENGTH, NEURONS, LAYER = 150, 8, 6, 2
SPEC = RecordsSpec(
    top_k=6, random_k=4, reference_k=2, quantile_k=2, boundary_pool=40, top_mean_tokens=3
)
MOMENTS = ["mean", "variance", "skewness", "kurtosis"]


@pytest.fixture
def activations() -> np.ndarray:
    # Rounded to tenths: many excerpts tie on their maximum, as in a bfloat16 model.
    rng = np.random.default_rng(1)
    return rng.standard_normal((N_EXCERPTS, LENGTH, NEURONS)).round(1).astype(np.float32)


def partial(acts: np.ndarray, shard: Shard, batch: int):
    excerpt_ids = np.arange(500, 500 + len(acts))
    tokens = np.arange(acts.shape[0] * acts.shape[1]).reshape(len(acts), -1) % 5
    plan = SamplingPlan.build(excerpt_ids, SPEC, shard)
    layer = LayerRecords(LAYER, NEURONS, LENGTH, plan, SPEC, vocabulary=np.arange(5))
    for rows in plan.batches(batch):
        ids = torch.from_numpy(excerpt_ids[rows])
        layer.update(torch.from_numpy(acts[rows]), rows, ids, tokens[rows])
    return layer.partial()


def assert_same_records(merged: pl.DataFrame, one_pass: pl.DataFrame) -> None:
    """Every chosen excerpt and activation exactly; moments and token means up to the rounding
    of float sums taken in another order."""
    rounded = [*MOMENTS, "top_mean_token_means"]
    assert merged.drop(rounded).equals(one_pass.drop(rounded))
    for name in MOMENTS:
        np.testing.assert_allclose(merged[name], one_pass[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.stack(merged["top_mean_token_means"].to_numpy()),
        np.stack(one_pass["top_mean_token_means"].to_numpy()),
        rtol=1e-5,
    )


def test_three_shards_merge_to_the_one_pass_records(activations):
    one_pass = records_frame(partial(activations, Shard(), 16), SPEC)
    shards = [partial(activations, Shard(i, 3), batch) for i, batch in enumerate((7, 16, 5))]
    # Through the shard table and back, as the sharded graph stores them.
    stored = [read_partials(partial_frame(p), SPEC)[0] for p in shards]
    merged = records_frame(merge_partials(stored, SPEC.seed), SPEC)
    assert_same_records(merged, one_pass)
    assert split_records(merged).equals(split_records(one_pass))
    # Ties on the maximum are broken by the smaller excerpt id, whatever the shard.
    maxes = activations.max(axis=1)
    for n, row in enumerate(one_pass.iter_rows(named=True)):
        expected = np.lexsort((np.arange(N_EXCERPTS), -maxes[:, n]))[: SPEC.top_k] + 500
        assert row["top_excerpt_ids"] == expected.tolist()


def test_merged_moments_match_numpy(activations):
    shifted = activations * 3 + 40  # a large mean next to the spread
    shards = [partial(shifted, Shard(i, 4), 9) for i in range(4)]
    got = merge_partials(shards, SPEC.seed).moments.result()
    x = shifted.reshape(-1, NEURONS).astype(np.float64)
    z = (x - x.mean(0)) / x.std(0)
    np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-7)
    np.testing.assert_allclose(got["variance"], x.var(0), rtol=1e-5)
    np.testing.assert_allclose(got["skewness"], (z**3).mean(0), atol=1e-4)
    np.testing.assert_allclose(got["kurtosis"], (z**4).mean(0) - 3, atol=1e-4)


def test_merge_refuses_mismatched_shards(activations):
    first, second = partial(activations, Shard(0, 2), 8), partial(activations, Shard(1, 2), 8)
    second.boundaries = second.boundaries * 2 + 1
    with pytest.raises(InputError, match="disagree on the quantile boundaries"):
        merge_partials([first, second], SPEC.seed)
    second.layer = LAYER + 1
    with pytest.raises(InputError, match="different layers"):
        merge_partials([first, second], SPEC.seed)
    with pytest.raises(InputError, match="shard 3 of 3"):
        Shard(3, 3)


def test_sharded_capture_of_a_model_equals_one_pass(tmp_path):
    folder = make_tiny_model(tmp_path, "gpt2", num_layers=2)
    subject = load_subject_model(
        tiny_spec(folder, batch_size=8), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    corpus = corpus_frame(90, 12, len(subject.tokenizer))
    spec = RecordsSpec(top_k=8, random_k=6, quantile_k=2, boundary_pool=20)
    one_pass = capture_records(subject, corpus, [0, 1], spec)
    per_shard = [
        capture_partials(subject, corpus, [0, 1], spec, shard=Shard(i, 3)) for i in range(3)
    ]
    merged = pl.concat(
        [
            records_frame(merge_partials(list(layer), spec.seed), spec)
            for layer in zip(*per_shard, strict=True)
        ]
    )
    assert merged.drop(MOMENTS).equals(one_pass.drop(MOMENTS))
    for name in MOMENTS:
        np.testing.assert_allclose(merged[name], one_pass[name], rtol=1e-4, atol=1e-6)
