"""Text from the corpus or an LLM, made safe to print: control characters (escape sequences that
clear a screen or set a window title, NUL, DEL), C1 controls and the Unicode marks that reorder
or hide text (bidirectional overrides and isolates, zero-width characters) are written as visible
escapes. Newlines and tabs stay, unless `keep_lines` is off."""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates/marks,
# zero-width characters, and the byte-order mark used as a zero-width no-break space.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]"
)
_UNSAFE_ALL = re.compile(_UNSAFE.pattern[:-1] + "\t\n]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_lines: bool = True) -> str:
    """`text` with every unsafe character shown as an escape (`\\x1b`, `\\u202e`)."""
    return (_UNSAFE if keep_lines else _UNSAFE_ALL).sub(_escape, text)
