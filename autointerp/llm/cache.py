"""A persistent, content-addressed cache of LLM responses, shared by threads, runs and processes.

One SQLite file in WAL mode: readers never block, writers from several processes queue on SQLite's
own lock (`busy_timeout`), and an entry is either fully written or absent. WAL needs a local
filesystem (not NFS); object storage is not a place for this cache.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from autointerp.errors import ConfigError
from autointerp.storage.hashing import canonical_json, digest

CACHE_FILE = "responses.sqlite"
_BUSY_TIMEOUT_MS = 60_000  # many processes writing at once wait their turn rather than fail


def request_hash(request: dict[str, Any]) -> str:
    """The request's digest: the cache key, request hash and call id."""
    return digest(request)


class ResponseCache:
    """Response bodies, byte for byte as received, keyed by request hash; first writer wins."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / CACHE_FILE
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One connection used under a lock: sqlite3 objects must not be used by two threads at
            # once, and the calls are short enough that a lock costs nothing measurable.
            self._db = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT NULL,"
                " created_at REAL NOT NULL)"
            )
            self._db.commit()
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"LLM response cache {self.path} is unusable: {err}") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return row[0] if row else None

    def put(self, key: str, request: dict[str, Any], response: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO responses (key, request, response, created_at)"
                " VALUES (?, ?, ?, ?)",
                (key, canonical_json(request), response, time.time()),
            )
            self._db.commit()

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
