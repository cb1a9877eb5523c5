"""Activation capture on tiny models of every supported architecture, against direct hooks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from autointerp.activations.capture import capture_records
from autointerp.activations.subject_model import load_subject_model
from autointerp.config.settings import RecordsSpec
from autointerp.errors import InputError
from autointerp.testing.tiny_models import ARCHITECTURES, make_tiny_model, tiny_spec

SPEC = RecordsSpec(top_k=5, random_k=3, quantile_k=2, boundary_pool=8)


def corpus_frame(n: int, length: int, vocab: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(n, length))
    return pl.DataFrame(
        {
            "excerpt_id": pl.Series(np.arange(n), dtype=pl.Int64),
            "token_ids": pl.Series(ids.tolist(), dtype=pl.List(pl.Int32)),
        }
    )


def all_activations(subject, tokens: np.ndarray, layer: int) -> np.ndarray:
    """Every excerpt's activations at `layer`, by a plain full forward pass."""
    seen = []
    handle = subject.neuron_module(layer).register_forward_pre_hook(
        lambda _m, inputs: seen.append(inputs[0].detach().float())
    )
    with torch.inference_mode():
        subject.model(input_ids=torch.from_numpy(tokens), attention_mask=torch.ones(tokens.shape))
    handle.remove()
    return seen[0].numpy()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_top_k_matches_a_direct_forward_pass(tmp_path, architecture):
    path = make_tiny_model(tmp_path, architecture, num_layers=2)
    subject = load_subject_model(
        tiny_spec(path), cache_dir=tmp_path / "c", downloads=tmp_path / "d", allow_hub=False
    )
    corpus = corpus_frame(24, 12, len(subject.tokenizer))
    frame = capture_records(subject, corpus, [0, 1], SPEC)
    tokens = np.asarray(corpus["token_ids"].to_list())
    assert frame["layer"].unique().sort().to_list() == [0, 1]
    for layer in (0, 1):
        acts = all_activations(subject, tokens, layer)  # [excerpts, tokens, neurons]
        records = frame.filter(layer=layer).sort("neuron")
        assert records.height == subject.neurons_per_layer == acts.shape[2]
        maxes = acts.max(axis=1)
        for row in records.head(4).iter_rows(named=True):
            n = row["neuron"]
            expected = np.argsort(-maxes[:, n], kind="stable")[: SPEC.top_k]
            np.testing.assert_allclose(row["top_max_activations"], maxes[expected, n], rtol=1e-5)
            got = np.array(row["top_activations"])
            np.testing.assert_allclose(got, acts[row["top_excerpt_ids"], :, n], atol=1e-5)
            np.testing.assert_allclose(row["mean"], acts[:, :, n].mean(), rtol=1e-3, atol=1e-6)


def test_pass_stops_after_the_deepest_requested_layer(tmp_path, tiny_model_dir):
    subject = load_subject_model(
        tiny_spec(tiny_model_dir), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    calls = []
    handle = subject.neuron_module(1).register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        capture_records(subject, corpus_frame(16, 8, len(subject.tokenizer)), [0], SPEC)
    finally:
        handle.remove()
    assert calls == []


def test_capture_refuses_bad_requests(tmp_path, tiny_model_dir):
    subject = load_subject_model(
        tiny_spec(tiny_model_dir), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    vocab = len(subject.tokenizer)
    with pytest.raises(InputError, match="out of range"):
        capture_records(subject, corpus_frame(16, 8, vocab), [2], SPEC)
    with pytest.raises(InputError, match="exceed the model's context"):
        capture_records(subject, corpus_frame(16, 65, vocab), [0], SPEC)
    with pytest.raises(InputError, match="fewer than top_k"):
        capture_records(subject, corpus_frame(3, 8, vocab), [0], SPEC)
    with pytest.raises(InputError, match="no excerpts"):
        capture_records(subject, corpus_frame(0, 8, vocab), [0], SPEC)
