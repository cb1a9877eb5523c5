"""Training one study model: the same windows in the same order, the same seed and schedule for
every activation, so that the models differ only in their MLP.

AdamW (β = 0.9, 0.95) with weight decay on matrices only, a linear warm-up to the peak learning
rate and a cosine decay to a tenth of it, gradients clipped at norm 1, float32 throughout, no
dropout. The initial weights come from `seed` in a forked RNG, and the batches from
`batch_order`, so training is deterministic given the seed on one device (on CUDA, PyTorch's
deterministic algorithms are asked for). The held-out loss curve is measured on the first
`eval_windows` held-out windows every `eval_every` steps; the final held-out loss on all of them.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from autointerp.activations.subject_model import resolve_device
from autointerp.config.settings import StudySpec
from autointerp.progress import Progress
from autointerp.storage.schemas import LOSS_CURVE_SCHEMA, TRAINED_MODEL_SCHEMA
from autointerp.study.architecture import (
    StudyConfig,
    StudyForCausalLM,
    mlp_width,
    parameter_counts,
)
from autointerp.study.data import batch_order

_EVAL_BATCH = 64  # windows per forward pass when measuring held-out loss
_MIN_LR_FRACTION = 0.1


@dataclass(frozen=True)
class TrainedModel:
    activation: str
    model: StudyForCausalLM  # on the CPU, in eval mode
    curve: pl.DataFrame  # LOSS_CURVE_SCHEMA
    heldout_loss: float  # nats per token on every held-out window
    parameters: dict[str, int]  # parameter_counts
    tokens: int  # training tokens seen
    seconds: float  # wall time of the training steps (not of the held-out evaluations)
    device: str


def study_config(spec: StudySpec, activation: str, vocab_size: int) -> StudyConfig:
    """The model of `activation`: the study's shape, with the MLP width matched in parameters."""
    return StudyConfig(
        activation=activation,
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        intermediate_size=mlp_width(activation, spec.mlp_width),
        max_position_embeddings=spec.context_length,
    )


def learning_rate(spec: StudySpec, step: int) -> float:
    """The learning rate of `step` (0-based): linear warm-up, then cosine decay to 10%."""
    if step < spec.warmup_steps:
        return spec.learning_rate * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return spec.learning_rate * (_MIN_LR_FRACTION + (1 - _MIN_LR_FRACTION) * cosine)


def train_model(
    activation: str,
    spec: StudySpec,
    train: np.ndarray,
    heldout: np.ndarray,
    vocab_size: int,
    *,
    progress: Progress | None = None,
) -> TrainedModel:
    """Train the `activation` model on `train` windows; measure it on `heldout` windows."""
    device = resolve_device(spec.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = StudyForCausalLM(study_config(spec, activation, vocab_size))
    model.to(device).train()
    with _deterministic(device):
        curve, seconds = _train_steps(model, spec, train, heldout, device, progress)
        final = mean_loss(model, torch.from_numpy(heldout), device)
    model.to("cpu").eval()
    return TrainedModel(
        activation=activation,
        model=model,
        curve=curve,
        heldout_loss=final,
        parameters=parameter_counts(model),
        tokens=spec.steps * spec.batch_size * train.shape[1],
        seconds=seconds,
        device=str(device),
    )


def _train_steps(
    model: StudyForCausalLM,
    spec: StudySpec,
    train: np.ndarray,
    heldout: np.ndarray,
    device: torch.device,
    progress: Progress | None,
) -> tuple[pl.DataFrame, float]:
    """Every training step; (the loss curve, the seconds the steps took)."""
    optimizer = _optimizer(model, spec)
    order = batch_order(len(train), spec.batch_size, spec.steps, spec.seed)
    windows = torch.from_numpy(train)
    probe = torch.from_numpy(heldout[: spec.eval_windows])
    rows, losses, seconds = [], [], 0.0
    for step in range(spec.steps):
        started = time.perf_counter()
        rate = learning_rate(spec, step)
        for group in optimizer.param_groups:
            group["lr"] = rate
        batch = windows[order[step]].to(device)
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.detach())
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - started
        done = step + 1
        if done % spec.eval_every == 0 or done == spec.steps:
            rows.append(
                {
                    "step": done,
                    "tokens": done * spec.batch_size * train.shape[1],
                    "learning_rate": rate,
                    "train_loss": float(torch.stack(losses).mean()),
                    "heldout_loss": mean_loss(model, probe, device),
                }
            )
            losses.clear()
            model.train()
        if progress:
            progress(done, spec.steps)
    return pl.DataFrame(rows, schema=LOSS_CURVE_SCHEMA), seconds


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """PyTorch's deterministic algorithms while training on CUDA (the CPU kernels used here are
    deterministic already); the previous setting is restored after."""
    if device.type != "cuda":
        yield
        return
    # cuBLAS is deterministic only with a fixed workspace, set before its first use.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def trained_model_row(trained: TrainedModel, name: str, unigram_loss: float) -> pl.DataFrame:
    """The one row (TRAINED_MODEL_SCHEMA) that records a trained model as subject model `name`."""
    config = trained.model.config
    row = {
        "model": name,
        "activation": trained.activation,
        "layers": config.num_hidden_layers,
        "mlp_width": config.intermediate_size,
        **trained.parameters,
        "steps": trained.curve["step"].max(),
        "tokens": trained.tokens,
        "heldout_loss": trained.heldout_loss,
        "unigram_loss": unigram_loss,
        "curve": trained.curve.to_dicts(),
    }
    return pl.DataFrame([row], schema=TRAINED_MODEL_SCHEMA)


def _optimizer(model: StudyForCausalLM, spec: StudySpec) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (embeddings included), none on norms."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": matrices, "weight_decay": spec.weight_decay},
            {"params": vectors, "weight_decay": 0.0},
        ],
        lr=spec.learning_rate,
        betas=(0.9, 0.95),
    )


@torch.no_grad()
def mean_loss(model: StudyForCausalLM, windows: torch.Tensor, device: torch.device) -> float:
    """Mean next-token cross-entropy (nats per token) over every prediction in `windows`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), _EVAL_BATCH):
        batch = windows[start : start + _EVAL_BATCH].to(device)
        predictions = batch.shape[0] * (batch.shape[1] - 1)
        total += float(model(batch, labels=batch).loss) * predictions
        count += predictions
    return total / count
