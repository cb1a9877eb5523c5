"""The response cache that workers on several machines share: one object per response under a
location every worker reaches (`<Delta root>/llm_cache`, on object storage or a shared folder).

An entry is written once: a conditional put (`If-None-Match: *` on S3) lets the first writer
win, so two workers that bought the same response keep one and never overwrite each other. An
object store writes an object whole or not at all; an entry that still does not read back as
this key's response (damaged, truncated by a tool, written for another key) is a miss, and the
response bought again replaces it. As with the SQLite cache, no paid response is lost: a write
that fails is retried, and what is still unwritten when the cache closes is spilled to the local
`spill_folder`, which the next open imports.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from obstore.exceptions import BaseError

from autointerp.llm.cache import Pending, read_spills, spill
from autointerp.storage.hashing import canonical_json
from autointerp.storage.object_store import ObjectStore

log = logging.getLogger(__name__)

SPILL_NAME = "shared"
# What a store that fails (network, permissions, a full disk) raises through obstore.
_STORE_ERRORS = (OSError, BaseError)


class SharedResponseCache:
    """Response bodies keyed by request hash, one object each, under `location`."""

    def __init__(
        self,
        location: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        spill_folder: str | Path,
    ) -> None:
        self.location = location.rstrip("/")
        self._store = ObjectStore(self.location, storage_options)
        self._spill_folder = Path(spill_folder)
        self._lock = threading.Lock()
        self._pending: Pending = {}
        self._unusable: set[str] = set()  # keys whose stored entry did not read back
        self._warned = False
        for path, entries in read_spills(self._spill_folder, SPILL_NAME):
            with self._lock:
                self._pending.update(entries)
                self._flush()
                if not self._pending:
                    path.unlink(missing_ok=True)

    def get(self, key: str) -> str | None:
        with self._lock:
            if key in self._pending:
                return self._pending[key][1]
        try:
            data = self._store.get(_object_key(key))
        except _STORE_ERRORS as err:
            self._warn(f"reading it failed ({err}); answering as a miss")
            return None
        if data is None:
            return None
        body = _body(key, data)
        if body is None:
            log.warning("LLM response cache %s: entry %s is unusable; asking again", self, key)
            with self._lock:
                self._unusable.add(key)
        return body

    def put(
        self, key: str, request: dict[str, Any], response: str, *, replace: bool = False
    ) -> None:
        """Store a body. The first writer wins, unless `replace` (a stored body the parser now
        rejects) or the stored entry was unusable."""
        with self._lock:
            self._pending[key] = (canonical_json(request), response, replace)
            self._flush()

    def count(self) -> int:
        with self._lock:
            stored = {path.rsplit("/", 1)[-1].removesuffix(".json") for path in self._store.paths()}
            return len(stored | set(self._pending))

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._pending and spill(self._spill_folder, SPILL_NAME, self._pending):
                self._pending.clear()

    def __str__(self) -> str:
        return self.location

    def _flush(self) -> None:
        for key, (request, body, replace) in list(self._pending.items()):
            entry = json.dumps({"key": key, "request": request, "response": body}).encode()
            overwrite = replace or key in self._unusable
            try:
                self._store.put(_object_key(key), entry, create=not overwrite)
            except _STORE_ERRORS as err:
                self._warn(f"writing it failed ({err}); the responses are kept to write later")
                return
            self._unusable.discard(key)
            del self._pending[key]

    def _warn(self, what: str) -> None:
        if not self._warned:  # once per cache: a broken store must not flood the log
            log.warning("LLM response cache %s: %s", self.location, what)
            self._warned = True


def _object_key(key: str) -> str:
    # A two-character fan-out keeps listings of one prefix short on stores that page them.
    return f"{key[:2]}/{key}.json"


def _body(key: str, data: bytes) -> str | None:
    """The stored response, or None when the entry is not a whole entry for `key`."""
    try:
        entry = json.loads(data)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    response = entry.get("response")
    return response if isinstance(response, str) else None
