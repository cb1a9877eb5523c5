"""A persistent, content-addressed cache of LLM responses, shared by threads, runs and processes.

One SQLite file in WAL mode: readers never block, writers from several processes queue on SQLite's
own lock (`busy_timeout`), and an entry is either fully written or absent. WAL needs a local
filesystem (not NFS): workers on several machines share `shared_cache.py` instead.

The cache never stops a stage and never loses a paid response: a file SQLite cannot read is moved
aside (and a new one started); a read that fails is a miss; a write that fails (a lock held too
long, a full disk) is kept in memory and retried, and responses still unwritten when the cache
closes are spilled to a JSON-lines file beside it, which the next open imports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from autointerp.storage.hashing import canonical_json, digest

log = logging.getLogger(__name__)

CACHE_FILE = "responses.sqlite"
_BUSY_TIMEOUT_MS = 60_000  # many processes writing at once wait their turn rather than fail


def request_hash(request: dict[str, Any]) -> str:
    """The request's digest: the cache key, request hash and call id."""
    return digest(request)


Pending = dict[str, tuple[str, str, bool]]  # key -> (request, body, replace)


class ResponseStore(Protocol):
    """What the client needs of a response cache (SQLite here, objects in `shared_cache.py`)."""

    location: str

    def get(self, key: str) -> str | None: ...

    def put(
        self, key: str, request: dict[str, Any], response: str, *, replace: bool = False
    ) -> None: ...

    def count(self) -> int: ...

    def close(self) -> None: ...


def spill(folder: Path, name: str, pending: Pending) -> bool:
    """Write responses a cache could not store to a JSON-lines file in the local `folder`, for
    the next open to import; whether that worked."""
    path = folder / f"{name}.pending-{os.getpid()}-{time.time_ns()}.jsonl"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for key, (request, body, replace) in pending.items():
                out.write(json.dumps([key, request, body, replace]) + "\n")
    except OSError as err:
        log.error("LLM responses could not be written to %s either: %s", path, err)
        return False
    log.warning("%d LLM responses kept in %s, to be imported next time", len(pending), path)
    return True


def read_spills(folder: Path, name: str) -> Iterator[tuple[Path, Pending]]:
    """Each spill file of the cache `name` in `folder`, with its responses; the caller deletes
    a file once its responses are stored."""
    for path in sorted(folder.glob(f"{name}.pending-*.jsonl")):
        try:
            entries: Pending = {}
            for line in path.read_text().splitlines():
                key, request, body, replace = json.loads(line)
                entries[key] = (request, body, replace)
        except (OSError, ValueError) as err:
            log.warning("cannot import %s (%s); left in place", path, err)
            continue
        yield path, entries


class ResponseCache:
    """Response bodies, byte for byte as received, keyed by request hash."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / CACHE_FILE
        self.location = str(self.path)
        self._lock = threading.Lock()
        self._pending: Pending = {}
        self._warned = False
        self._db: sqlite3.Connection | None = None
        with self._lock:
            self._open()
            self._import_spills()

    # -- public ----------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """The body stored for `key`, or None (a miss, or a cache that cannot be read now)."""
        with self._lock:
            if key in self._pending:
                return self._pending[key][1]
            try:
                row = self._execute("SELECT response FROM responses WHERE key = ?", (key,))
            except sqlite3.Error as err:
                self._warn(f"reading it failed ({err}); answering as a miss")
                return None
            return row[0] if row else None

    def put(
        self, key: str, request: dict[str, Any], response: str, *, replace: bool = False
    ) -> None:
        """Store a body. The first writer wins, unless `replace` (a stored body that the parser
        now rejects is replaced by the one just bought)."""
        with self._lock:
            self._pending[key] = (canonical_json(request), response, replace)
            self._flush()

    def count(self) -> int:
        with self._lock:
            row = self._execute("SELECT COUNT(*) FROM responses", ())
            return int(row[0]) + len(self._pending)

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._pending:
                self._spill()
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- internals -------------------------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
        except sqlite3.DatabaseError as err:
            aside = self.path.with_name(f"{CACHE_FILE}.unreadable-{int(time.time())}")
            log.warning(
                "LLM response cache %s cannot be read (%s): moved to %s, starting a new one",
                self.path,
                err,
                aside,
            )
            try:
                os.replace(self.path, aside)
                self._db = self._connect()
            except (OSError, sqlite3.Error) as again:
                self._warn(f"it cannot be used ({again}); responses are kept in memory")
        except OSError as err:
            self._warn(f"it cannot be used ({err}); responses are kept in memory")

    def _connect(self) -> sqlite3.Connection:
        # One connection used under a lock: sqlite3 objects must not be used by two threads at
        # once, and the calls are short enough that a lock costs nothing measurable.
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, request TEXT NOT NULL, response TEXT NOT NULL,"
                " created_at REAL NOT NULL)"
            )
            db.execute(
                "SELECT COUNT(*) FROM responses"
            ).fetchone()  # reads a page: corruption shows
            db.commit()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _execute(self, sql: str, parameters: tuple) -> Any:
        if self._db is None:
            raise sqlite3.OperationalError("the cache file is not open")
        return self._db.execute(sql, parameters).fetchone()

    def _flush(self) -> None:
        """Write pending bodies; what cannot be written now stays pending."""
        if not self._pending or self._db is None:
            return
        try:
            for key, (request, body, replace) in self._pending.items():
                verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
                self._db.execute(
                    f"{verb} INTO responses (key, request, response, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (key, request, body, time.time()),
                )
            self._db.commit()
        except sqlite3.Error as err:
            self._warn(f"writing it failed ({err}); the responses are kept to write later")
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            return
        self._pending.clear()

    def _spill(self) -> None:
        if spill(self.path.parent, CACHE_FILE, self._pending):
            self._pending.clear()

    def _import_spills(self) -> None:
        for path, entries in read_spills(self.path.parent, CACHE_FILE):
            self._pending.update(entries)
            self._flush()
            if not self._pending:
                path.unlink(missing_ok=True)

    def _warn(self, what: str) -> None:
        if not self._warned:  # once per cache: a broken cache must not flood the log
            log.warning("LLM response cache %s: %s", self.path, what)
            self._warned = True
