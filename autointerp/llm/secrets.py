"""Keeping API keys out of everything the client records: error texts are scrubbed of the key
itself and of anything that looks like one."""

from __future__ import annotations

import re

from autointerp.llm.endpoint import NO_KEY

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)\S+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys, should a server echo another
)


def scrub(text: str, key: str) -> str:
    """An error text without the key, an Authorization header's value or anything key-like."""
    text = scrub_body(text, key)
    return _SECRET_PATTERNS[0].sub(r"\1[redacted]", text)


def scrub_body(body: str, key: str) -> str:
    """A reply's body without the key or anything key-like, before it is parsed, cached or
    written: a server that echoes the key in a successful reply must not get it stored."""
    if key and key != NO_KEY:
        body = body.replace(key, "[api key]")
    return _SECRET_PATTERNS[1].sub("[redacted]", body)
