"""The corpus: fixed-length token excerpts of a text source (`corpus_sources`).

`build_corpus` tokenizes documents and cuts each into consecutive, non-overlapping windows of
exactly `excerpt_tokens` tokens. Windows never span two documents, and a document's tail shorter
than a window is dropped, so every excerpt is a real stretch of one text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from autointerp.activations.corpus_sources import Document
from autointerp.activations.sampling import excerpt_keys
from autointerp.errors import InputError
from autointerp.storage.hashing import canonical_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Documents are tokenized in batches bounded by count and size: the fast tokenizer's batch call
# runs in parallel, and memory stays bounded however large the source.
_BATCH_DOCUMENTS = 64
_BATCH_CHARS = 1_000_000


def _batches(documents: Iterable[Document]) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for document in documents:
        batch.append(document)
        chars += len(document.text)
        if len(batch) >= _BATCH_DOCUMENTS or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def build_corpus(
    documents: Iterable[Document],
    tokenizer: PreTrainedTokenizerBase,
    *,
    excerpt_tokens: int,
    context_length: int,
    max_excerpts: int | None = None,
    progress: bool = True,
) -> pl.DataFrame:
    """Cut the documents into excerpts of exactly `excerpt_tokens` tokens.

    Columns: excerpt_id (0..n-1), text (the decoded excerpt), tokens (each token decoded on its
    own, for display), token_ids, source, license. Special tokens are not added: an excerpt is
    text only, and the subject model's capture adds whatever its architecture needs.
    """
    if not 1 <= excerpt_tokens <= context_length:
        raise InputError(
            f"excerpt_tokens is {excerpt_tokens}; it must be between 1 and the model's context "
            f"length, {context_length}"
        )
    if max_excerpts is not None and max_excerpts < 1:
        raise InputError(f"max_excerpts is {max_excerpts}; it must be at least 1 (or unset)")

    windows: list[np.ndarray] = []  # one (n, excerpt_tokens) block per document that yields any
    sources: list[str] = []
    licenses: list[str] = []
    total_tokens = longest = n_documents = n_excerpts = 0
    with tqdm(
        total=max_excerpts, unit="excerpt", desc="corpus", disable=not progress, leave=False
    ) as bar:
        for batch in _batches(documents):
            encoded = tokenizer(
                [d.text for d in batch],
                add_special_tokens=False,
                return_attention_mask=False,
                verbose=False,  # documents are longer than the model's context by design
            )["input_ids"]
            for document, ids in zip(batch, encoded, strict=True):
                if n_excerpts == max_excerpts:
                    break
                n_documents += 1
                total_tokens += len(ids)
                longest = max(longest, len(ids))
                count = len(ids) // excerpt_tokens
                if max_excerpts is not None:
                    count = min(count, max_excerpts - n_excerpts)
                if count == 0:
                    continue
                block = np.asarray(ids[: count * excerpt_tokens], dtype=np.int64)
                windows.append(block.reshape(count, excerpt_tokens))
                sources += [document.source] * count
                licenses += [document.license] * count
                n_excerpts += count
                bar.update(count)
            bar.set_postfix(documents=n_documents, tokens=total_tokens)
            if n_excerpts == max_excerpts:
                break

    if total_tokens == 0:
        found = f"{n_documents} documents, all empty" if n_documents else "no documents"
        raise InputError(f"the corpus has no text ({found})")
    if n_excerpts == 0:
        raise InputError(
            f"the corpus has {total_tokens} tokens in {n_documents} documents (the longest has "
            f"{longest}), but one excerpt needs {excerpt_tokens} tokens of one document: use a "
            "longer text or a smaller excerpt_tokens"
        )
    return _frame(np.concatenate(windows), sources, licenses, tokenizer)


def _frame(
    ids: np.ndarray, sources: list[str], licenses: list[str], tokenizer: PreTrainedTokenizerBase
) -> pl.DataFrame:
    n, width = ids.shape
    if ids.max() >= 2**31:
        raise InputError(f"token id {ids.max()} does not fit the corpus's Int32 token_ids")
    # Each distinct id is decoded once, then the strings are gathered by index: one decode per
    # vocabulary entry used rather than one per token occurrence (millions on a real corpus).
    vocabulary, index = np.unique(ids, return_inverse=True)
    decode = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    table = pl.Series(
        tokenizer.batch_decode([[int(i)] for i in vocabulary], **decode), dtype=pl.Utf8
    )
    tokens = table.gather(index.ravel()).reshape((n, width)).cast(pl.List(pl.Utf8))
    token_ids = pl.Series(ids.astype(np.int32).ravel()).reshape((n, width)).cast(pl.List(pl.Int32))
    return pl.DataFrame(
        {
            "excerpt_id": pl.Series(np.arange(n, dtype=np.int64)),
            "text": pl.Series(tokenizer.batch_decode(ids.tolist(), **decode), dtype=pl.Utf8),
            "tokens": tokens,
            "token_ids": token_ids,
            "source": pl.Series(sources, dtype=pl.Utf8),
            "license": pl.Series(licenses, dtype=pl.Utf8),
        }
    )


def corpus_id(frame: pl.DataFrame, tokenizer: object) -> str:
    """The corpus's identity: a hash of its content (every excerpt's id, token ids, source and
    licence) and of the tokenizer that cut it. The same source, sample size, seed and tokenizer
    give the same id; any difference in what the excerpts hold gives another."""
    digest = hashlib.sha256()
    digest.update(canonical_json(tokenizer).encode())
    digest.update(frame["excerpt_id"].to_numpy().astype(np.int64).tobytes())
    digest.update(frame["token_ids"].explode().to_numpy().astype(np.int64).tobytes())
    for column in ("source", "license"):
        digest.update(canonical_json(frame[column].to_list()).encode())
    return f"corpus-{digest.hexdigest()[:16]}"


def corpus_summary(frame: pl.DataFrame) -> dict:
    """Counts for materialization metadata: excerpts, tokens, sources and the licences in use."""
    return {
        "excerpts": frame.height,
        "tokens": int(frame["token_ids"].list.len().sum() or 0),
        "sources": frame["source"].n_unique(),
        "licenses": sorted(frame["license"].unique().to_list()),
    }


def sample_excerpts(frame: pl.DataFrame, n: int, seed: int) -> pl.DataFrame:
    """A seeded uniform sample of `n` excerpts (all when there are fewer), in excerpt order.

    Excerpts keep their ids, and the first `n` of a source would be a few documents only: a
    sample spread over the whole corpus is what a small run should see.
    """
    if n >= frame.height:
        return frame
    keys = excerpt_keys(frame["excerpt_id"].to_numpy(), seed)
    chosen = np.sort(np.argsort(keys, kind="stable")[:n])
    return frame[chosen]
