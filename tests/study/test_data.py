"""Training data: a deterministic tokenizer, windows that keep documents apart, a seeded held-out
split, one batch order for every model, and the unigram baseline."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from autointerp.errors import InputError
from autointerp.study.data import batch_order, split_windows, token_windows, training_frame
from autointerp.study.tokenizer import EOS, train_byte_level_bpe
from autointerp.study.unigram import unigram_loss
from tests.conftest import WORDS

TEXTS = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(0, 40, 4)]


def test_the_tokenizer_is_deterministic_and_lossless():
    first, second = (train_byte_level_bpe(TEXTS, 300) for _ in range(2))
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    text = "Thou art more lovely: 42 {keys}, ünïcödé!"
    assert first.decode(first(text).input_ids) == text  # bytes: never an unknown token
    assert first.eos_token == EOS and len(first) <= 300


def test_windows_join_documents_with_eos_and_drop_the_tail():
    tokenizer = train_byte_level_bpe(TEXTS, 300)
    windows = token_windows(TEXTS, tokenizer, 16)
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) + 1 for t in TEXTS]
    assert windows.shape == (sum(lengths) // 16, 16)
    stream = windows.ravel()
    assert (stream == tokenizer.eos_token_id).sum() == np.searchsorted(
        np.cumsum(lengths), len(stream), side="right"
    )
    assert stream[lengths[0] - 1] == tokenizer.eos_token_id
    with pytest.raises(InputError, match="fewer than one training window"):
        token_windows(["short"], tokenizer, 16)


def test_the_held_out_windows_are_a_seeded_uniform_share():
    windows = np.arange(4000 * 4, dtype=np.int32).reshape(4000, 4)
    frame = training_frame(windows, 0.1, seed=3)
    assert frame.equals(training_frame(windows, 0.1, seed=3))
    assert not frame.equals(training_frame(windows, 0.1, seed=4))
    share = (frame["split"] == "heldout").mean()
    assert 0.08 < share < 0.12
    train, heldout = split_windows(frame)
    assert len(train) + len(heldout) == 4000 and train.shape[1] == 4
    assert not set(train[:, 0]) & set(heldout[:, 0])
    # Held-out windows spread over the whole corpus, not its end.
    held = frame.filter(pl.col("split") == "heldout")["window"]
    assert held.min() < 400 and held.max() > 3600
    with pytest.raises(InputError, match="heldout_fraction"):
        training_frame(windows, 0.0, seed=0)


def test_every_epoch_is_a_seeded_permutation_of_the_windows():
    order = batch_order(10, batch_size=4, steps=6, seed=0)
    assert order.shape == (6, 4)
    flat = order.ravel()
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert np.array_equal(order, batch_order(10, batch_size=4, steps=6, seed=0))
    assert not np.array_equal(order, batch_order(10, batch_size=4, steps=6, seed=1))


def test_the_unigram_baseline_is_the_cross_entropy_of_smoothed_frequencies():
    vocab = 4
    uniform = np.array([[0, 1, 2, 3]] * 5)
    assert unigram_loss(uniform, uniform, vocab) == pytest.approx(math.log(vocab))
    train = np.array([[0, 0, 0, 1]])  # counts + 1: 4, 2, 1, 1 of 8
    heldout = np.array([[3, 0, 1]])  # the first token of a window is never predicted
    expected = -(math.log(4 / 8) + math.log(2 / 8)) / 2
    assert unigram_loss(train, heldout, vocab) == pytest.approx(expected)
