"""Objects beside the Delta tables (the shared LLM response cache): one store API for a local
folder and for `s3://`, `gs://`, `az://` URIs, configured by the same storage options as the
tables (delta-rs and obstore both sit on the Rust `object_store` crate, so the option names
agree). Whatever the options leave out, credentials above all, comes from the environment.

Writes can be write-once: `put(..., create=True)` is a conditional put (`If-None-Match: *` on
S3), so of two writers of one key exactly one wins and neither can overwrite the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import LocalStore, from_url

# Options of the HTTP client rather than of a store; delta-rs also takes them with a provider's
# prefix (e.g. AWS_ALLOW_HTTP).
_CLIENT_OPTIONS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "timeout",
        "pool_idle_timeout",
        "proxy_url",
        "user_agent",
    }
)
_PROVIDERS = ("aws_", "azure_", "google_")


def is_uri(location: str) -> bool:
    """Whether `location` names an object store (`s3://…`) rather than a local folder."""
    return "://" in location and not location.startswith("file://")


def local_path(location: str) -> Path:
    """The folder a local location names (a plain path or a `file://` URI)."""
    return Path(location.removeprefix("file://"))


class ObjectStore:
    """Bytes by key under one prefix of a store."""

    def __init__(self, location: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.location = location.rstrip("/")
        if is_uri(location):
            config, client = _split_options(storage_options or {})
            self._store = from_url(self.location, config=config, client_options=client)
        else:
            self._store = LocalStore(local_path(self.location), mkdir=True)

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        try:
            return bytes(obstore.get(self._store, key).bytes())
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes, *, create: bool = False) -> bool:
        """Write the object; with `create`, only when no object has the key (False: another
        writer's object is there and is kept)."""
        try:
            obstore.put(self._store, key, data, mode="create" if create else "overwrite")
        except AlreadyExistsError:
            return False
        return True

    def paths(self, prefix: str | None = None) -> Iterator[str]:
        for batch in obstore.list(self._store, prefix):
            for meta in batch:
                yield meta["path"]


def _split_options(options: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Storage options as delta-rs takes them -> (store config, HTTP client options)."""
    config: dict[str, str] = {}
    client: dict[str, str] = {}
    for key, value in options.items():
        name = key.lower()
        bare = next((name[len(p) :] for p in _PROVIDERS if name.startswith(p)), name)
        if bare in _CLIENT_OPTIONS:
            client[bare] = str(value)
        else:
            config[name] = str(value)
    return config, client
