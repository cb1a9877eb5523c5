"""One hashing scheme for everything the project keys or versions: sha256 of canonical JSON.

Canonical JSON has sorted keys, no spaces, unicode kept and no NaN, so the same value always gives
the same text. Request hashes (the LLM cache key and call id), prompt hashes, few-shot hashes and
the content hashes in profile hashes and code versions all come from `digest` below; dataclasses
and paths are turned into plain data first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from autointerp.errors import InputError


def plain(value: Any) -> Any:
    """`value` as plain JSON data: dataclasses become dicts, tuples lists, paths strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def canonical_json(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, unicode kept, NaN refused."""
    try:
        return json.dumps(
            plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as err:
        raise InputError(f"a hashed value must be plain JSON data: {err}") from None


def digest(value: Any) -> str:
    """sha256 (hex) of the value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def content_hash(*parts: Any, length: int = 12) -> str:
    """A short digest of `parts`, for profile hashes and code versions."""
    return digest(list(parts))[:length]
