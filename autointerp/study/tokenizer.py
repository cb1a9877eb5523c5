"""A byte-level BPE tokenizer trained in code: any text tokenizes without unknown tokens, and the
same texts always give the same vocabulary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def train_bpe(
    texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (EOS,)
) -> Tokenizer:
    """A GPT-2-style byte-level BPE of `vocab_size` tokens (the 256 bytes, the special tokens and
    merges), trained on `texts`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """The study's tokenizer: `train_bpe` with EOS as its one special token, which doubles as
    BOS, padding and unknown."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(texts, vocab_size),
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A tokenizer saved with `save_pretrained`, read from `folder` only."""
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
