"""A project at the reference method's scale: the GPT-2 XL-shaped model (48 layers × 6,400 MLP
neurons, hidden size 32, random weights), a small generated corpus and a configuration that runs
the whole graph over it with the offline baselines.

Records, top_k_excerpts and summaries cover all 307,200 neurons; explanations, simulations and
scores take `explained` neurons per layer (the baseline explainer's `neuron_sample`), as a run
with a paid explainer would.
"""

from __future__ import annotations

import random
from pathlib import Path

from autointerp.testing.tiny_models import make_xl_shaped_model

_TEXT = (
    "the king and queen walked in the garden of the castle talking of love war and bread "
    "numbers like 1 2 3 and 42 appear in the text shall I compare thee to a summer's day "
    "thou art more lovely def main return print hello world brackets keys quick brown fox"
)


def write_corpus(folder: Path, words: int = 12_000, seed: int = 0) -> Path:
    """Seeded word salad over the tokenizer's training words, as .txt files."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for doc in range(4):
        (folder / f"doc{doc}.txt").write_text(" ".join(rng.choices(_TEXT.split(), k=words // 4)))
    return folder


def write_project(folder: Path, *, explained: int = 4, extra: str = "") -> Path:
    """Model, corpus and configuration under `folder`; returns the configuration's path."""
    model = make_xl_shaped_model(folder / "models")
    corpus = write_corpus(folder / "corpus")
    config = folder / "autointerp.toml"
    config.write_text(
        f"""
[autointerp]
default_model = "gpt2-xl-shaped"

[models.gpt2-xl-shaped]
path = "{model}"
num_layers = 48
dtype = "float32"
device = "cpu"
batch_size = 32
context_length = 64

[corpus]
source = "text:{corpus}"
excerpt_tokens = 16

[records]
top_k = 8
random_k = 6
reference_k = 2
quantile_k = 1
boundary_pool = 16

[summaries]
bootstrap_samples = 100
floor_sample = "first:2"

[revisions]
rounds = 0

[pipeline]
explainers = ["token-statistics-baseline"]
simulators = ["lexical-baseline"]

[explainers.token-statistics-baseline]
kind = "baseline"
neuron_sample = "first:{explained}"

[simulators.lexical-baseline]
kind = "baseline"
method = "lexical-baseline"
{extra}
"""
    )
    return config
