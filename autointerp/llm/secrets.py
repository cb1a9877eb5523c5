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
    if key and key != NO_KEY:
        text = text.replace(key, "[api key]")
    text = _SECRET_PATTERNS[0].sub(r"\1[redacted]", text)
    return _SECRET_PATTERNS[1].sub("[redacted]", text)
