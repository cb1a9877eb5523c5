"""A tiny study: two activations, a 2-layer model 32 wide, a few hundred steps on a small text."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
import torch

from autointerp.config.settings import StudySpec

TINY_STUDY = """
[study]
activations = ["relu", "solu"]
vocab_size = 320
num_layers = 2
hidden_size = 32
num_heads = 2
mlp_width = 64
context_length = 32
steps = 200
batch_size = 8
warmup_steps = 20
eval_every = 50
eval_windows = 16
min_margin = 0.5
device = "cpu"
explain_excerpts = 200
"""


def tiny_study(**overrides) -> StudySpec:
    """The StudySpec that TINY_STUDY declares, with `overrides`."""
    fields = tomllib.loads(TINY_STUDY)["study"]
    fields["activations"] = tuple(fields["activations"])
    return replace(StudySpec(**fields), **overrides)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices train several times faster on one thread than on two, more so on a shared
    machine; every run of these tests uses the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
