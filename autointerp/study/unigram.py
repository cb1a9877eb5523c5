"""The unigram baseline every trained model must beat: the held-out loss of predicting each token
from its frequency in the training windows alone, ignoring all context."""

from __future__ import annotations

import numpy as np


def unigram_loss(train: np.ndarray, heldout: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy in nats per token of add-one-smoothed training frequencies on the held-out
    windows' targets: every token but each window's first, the tokens a model is scored on."""
    counts = np.bincount(train.ravel(), minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts) - np.log(counts.sum())
    return float(-log_probs[heldout[:, 1:].ravel()].mean())
