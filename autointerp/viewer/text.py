"""Text from the corpus or an LLM made visible before it is escaped: characters that act instead of
showing (control characters, ANSI escapes, NUL, bidirectional overrides) are shown as symbols, so
they can neither break a page's layout nor hide or reorder what is around them.

Escaping itself is the templates' job (Jinja2 autoescaping, on for every template); this runs
first, on every text from the corpus or an LLM (the `token` and `text` filters).
"""

from __future__ import annotations

# Bidirectional formatting characters: embeddings, overrides, isolates and marks.
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def _table(*, keep_lines: bool) -> dict[int, str]:
    table = {code: chr(0x2400 + code) for code in range(0x20)}  # ␀ … ␟ (␛ is ESC)
    table[0x7F] = "␡"
    table.update({code: f"⟨U+{code:04X}⟩" for code in [*range(0x80, 0xA0), *_BIDI]})
    table.update({0x2028: "↵", 0x2029: "¶", 0xFEFF: "⟨U+FEFF⟩"})
    if keep_lines:
        del table[ord("\n")], table[ord("\t")]
    else:
        table.update({ord("\n"): "↵", ord("\t"): "⇥"})
    return table


_TOKEN = _table(keep_lines=False)
_TEXT = _table(keep_lines=True)


def visible_token(text: str | None) -> str:
    """A token on one line: newlines and tabs shown as ↵ and ⇥ too."""
    return "" if text is None else text.translate(_TOKEN)


def visible_text(text: str | None) -> str:
    """A text that keeps its lines and tabs (explanations, prompts, completions)."""
    return "" if text is None else text.translate(_TEXT)
