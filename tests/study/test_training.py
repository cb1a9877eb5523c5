"""Training: deterministic given the seed, a warm-up and decay schedule (that a model learns is
checked end to end, in test_study_graph)."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from autointerp.study.data import prepare, split_windows
from autointerp.study.training import (
    _deterministic,
    learning_rate,
    train_model,
)
from tests.conftest import write_text_corpus
from tests.study.conftest import tiny_study


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_thread):
    folder = write_text_corpus(tmp_path_factory.mktemp("corpus"))
    texts = [path.read_text() for path in sorted(folder.iterdir())]
    tokenizer, frame = prepare(texts, tiny_study())
    return (*split_windows(frame), len(tokenizer))


def test_training_is_deterministic_given_the_seed(data):
    train, heldout, vocab = data
    spec = tiny_study(steps=30, eval_every=10)
    first, second = (train_model("solu", spec, train, heldout, vocab) for _ in range(2))
    other = train_model("solu", replace(spec, seed=1), train, heldout, vocab)
    for name, weights in first.model.state_dict().items():
        assert torch.equal(weights, second.model.state_dict()[name]), name
    assert first.curve.equals(second.curve) and first.heldout_loss == second.heldout_loss
    assert not torch.equal(first.model.lm_head.weight, other.model.lm_head.weight)
    assert first.curve["step"].to_list() == [10, 20, 30]
    assert first.curve["tokens"].to_list() == [10 * 8 * 32, 20 * 8 * 32, 30 * 8 * 32]


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
