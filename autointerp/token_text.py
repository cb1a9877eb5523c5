"""Token strings as words: the normalization and stemming the offline baselines match on."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1 << 17)
def normalize_token(token: str) -> str:
    """Lowercased, without the space markers of BPE ("Ġ") and SentencePiece ("▁") vocabularies
    or surrounding whitespace."""
    return token.lstrip("Ġ▁ ").strip().lower()


@lru_cache(maxsize=1 << 17)
def stem(word: str) -> str:
    """A crude suffix-stripping stem, enough to match "ships" to "ship" and "sailing" to
    "sails"; words that are not alphabetic are their own stem."""
    if not word.isalpha():
        return word
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        base = word[: len(word) - len(suffix)]
        if not word.endswith(suffix) or len(base) + len(replacement) < 3 or base.endswith("s"):
            continue
        if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2]:
            base = base[:-1]  # "shipping" -> "shipp" -> "ship"
        return base + replacement
    return word
