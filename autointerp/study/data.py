"""The study's training data: the corpus tokenized once, cut into windows, split into train and
held-out windows, and the order every model sees the training windows in.

Documents are tokenized without special tokens and joined by EOS into one stream, which is cut
into consecutive, non-overlapping windows of `context_length` tokens (the tail is dropped). A
window is held out when the seeded hash of its index (`excerpt_keys`) falls below
`heldout_fraction`: uniform over the corpus, and the same windows for every model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from autointerp.activations.sampling import excerpt_keys
from autointerp.config.settings import StudySpec
from autointerp.errors import InputError
from autointerp.storage.schemas import TRAINING_DATA_SCHEMA
from autointerp.study.tokenizer import train_byte_level_bpe

_BATCH_TEXTS = 64  # documents tokenized per call of the fast tokenizer (it runs them in parallel)


def prepare(texts: Sequence[str], study: StudySpec) -> tuple[PreTrainedTokenizerFast, pl.DataFrame]:
    """The study's tokenizer, trained on `texts`, and its training-data frame of them."""
    tokenizer = train_byte_level_bpe(texts, study.vocab_size)
    windows = token_windows(texts, tokenizer, study.context_length)
    return tokenizer, training_frame(windows, study.heldout_fraction, study.seed)


def token_windows(
    texts: Iterable[str], tokenizer: PreTrainedTokenizerBase, context_length: int
) -> np.ndarray:
    """The texts as one EOS-separated token stream cut into windows: [windows, context_length]."""
    eos = tokenizer.eos_token_id
    pieces: list[np.ndarray] = []
    batch: list[str] = []

    def flush() -> None:
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        pieces.extend(np.asarray([*ids, eos], dtype=np.int32) for ids in encoded)
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == _BATCH_TEXTS:
            flush()
    if batch:
        flush()
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    count = len(stream) // context_length
    if count == 0:
        raise InputError(
            f"the corpus has {len(stream)} tokens, fewer than one training window of "
            f"{context_length}: use a longer text or a smaller [study] context_length"
        )
    return stream[: count * context_length].reshape(count, context_length)


def training_frame(windows: np.ndarray, heldout_fraction: float, seed: int) -> pl.DataFrame:
    """One row per window (TRAINING_DATA_SCHEMA), a seeded `heldout_fraction` of them held out."""
    if not 0 < heldout_fraction < 1:
        raise InputError(f"heldout_fraction is {heldout_fraction}; it must lie in (0, 1)")
    index = np.arange(len(windows), dtype=np.int64)
    heldout = excerpt_keys(index, seed) < heldout_fraction
    if heldout.all() or not heldout.any():
        raise InputError(
            f"{len(windows)} windows with heldout_fraction = {heldout_fraction} leave no "
            "train or no held-out window: use more text"
        )
    return pl.DataFrame(
        {
            "window": index,
            "split": np.where(heldout, "heldout", "train"),
            "token_ids": pl.Series(list(windows), dtype=pl.List(pl.Int32)),
        },
        schema=TRAINING_DATA_SCHEMA,
    )


def split_windows(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) windows of a training-data frame, each [windows, context_length]."""

    def of(split: str) -> np.ndarray:
        rows = frame.filter(pl.col("split") == split).sort("window")["token_ids"]
        return np.asarray(rows.to_list(), dtype=np.int64)

    return of("train"), of("heldout")


def batch_order(n_windows: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """The training windows of every step, [steps, batch_size]: seeded permutations of all
    windows, one epoch after another, so every model sees the same windows in the same order."""
    rng = np.random.default_rng(seed)
    needed = steps * batch_size
    epochs = [rng.permutation(n_windows) for _ in range(-(-needed // n_windows))]
    return np.concatenate(epochs)[:needed].reshape(steps, batch_size)
