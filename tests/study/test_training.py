"""Training: deterministic given the seed, a warm-up and decay schedule, a model that learns."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from autointerp.study.data import split_windows, token_windows, training_frame
from autointerp.study.tokenizer import train_byte_level_bpe
from autointerp.study.training import (
    _deterministic,
    learning_rate,
    train_model,
    trained_model_row,
)
from autointerp.study.unigram import unigram_loss
from autointerp.table_checks import short_of_unigram
from tests.conftest import write_text_corpus
from tests.study.conftest import tiny_study


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_thread):
    folder = write_text_corpus(tmp_path_factory.mktemp("corpus"))
    texts = [path.read_text() for path in sorted(folder.iterdir())]
    tokenizer = train_byte_level_bpe(texts, 320)
    windows = token_windows(texts, tokenizer, 32)
    return (*split_windows(training_frame(windows, 0.05, seed=0)), len(tokenizer))


def test_training_is_deterministic_given_the_seed(data):
    train, heldout, vocab = data
    spec = tiny_study(steps=60, eval_every=20)
    first, second = (train_model("solu", spec, train, heldout, vocab) for _ in range(2))
    other = train_model("solu", replace(spec, seed=1), train, heldout, vocab)
    for name, weights in first.model.state_dict().items():
        assert torch.equal(weights, second.model.state_dict()[name]), name
    assert first.curve.equals(second.curve) and first.heldout_loss == second.heldout_loss
    assert not torch.equal(first.model.lm_head.weight, other.model.lm_head.weight)
    assert first.curve["step"].to_list() == [20, 40, 60]
    assert first.curve["tokens"].to_list() == [20 * 8 * 32, 40 * 8 * 32, 60 * 8 * 32]


def test_a_trained_model_beats_the_unigram_baseline(data):
    train, heldout, vocab = data
    spec = tiny_study()
    trained = train_model("relu", spec, train, heldout, vocab)
    baseline = unigram_loss(train, heldout, vocab)
    row = trained_model_row(trained, "study-relu", baseline)
    assert short_of_unigram(row, 0.5) == []
    assert short_of_unigram(row, baseline) != []  # a margin no model reaches fails the check
    curve = trained.curve
    assert curve["heldout_loss"][-1] < curve["heldout_loss"][0]
    assert row["parameters"][0] == sum(p.numel() for p in trained.model.parameters())
    assert trained.model.lm_head.weight is trained.model.model.embed_tokens.weight  # tied


def test_the_learning_rate_warms_up_then_decays_to_a_tenth():
    spec = tiny_study(steps=100, warmup_steps=10, learning_rate=1e-2)
    rates = np.array([learning_rate(spec, step) for step in range(100)])
    assert rates[0] == pytest.approx(1e-3) and rates[9] == pytest.approx(1e-2)
    assert np.all(np.diff(rates[:10]) > 0) and np.all(np.diff(rates[10:]) <= 0)
    assert rates[-1] == pytest.approx(1e-3, rel=0.01)


def test_cuda_training_asks_for_deterministic_algorithms_and_then_restores(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with _deterministic(torch.device("cuda")):
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()
    with _deterministic(torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()
