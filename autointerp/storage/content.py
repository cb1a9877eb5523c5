"""Content hashes of the frames the stages write, and the data version a write gets from them.

A partition's content hash is the sha256 of its schema and rows in Arrow's IPC format, in a
canonical layout (batches of HASH_CHUNK_ROWS rows, plain strings and lists, rows in the order of
their plain columns), leaving out the columns that record how a row was made rather than what it
holds: run ids, code versions, the versions of the tables read, and the timing and accounting of
LLM calls. So a rerun that computes
the same rows gets the same hash, however the step ran.

The orchestrator records one data version per write, shared by every partition the write
covers (Dagster cannot record one per partition of a multi-partition step). The rule below keeps
that version tied to content: a write whose partitions all hold what they held before keeps the
version they had (the most common one, when they had several), so nothing downstream turns
stale; a write that changed anything gets a version hashed from its partitions' contents.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from autointerp.storage.hashing import digest

# How a row was made, not what it holds: left out of content hashes.
PROVENANCE_COLUMNS = frozenset(
    {"dagster_run_id", "code_version", "latency_s", "attempts", "cached", "cost_usd", "status"}
)
VERSION_LENGTH = 16
HASH_CHUNK_ROWS = 4096


def is_provenance(column: str) -> bool:
    """Provenance columns, and `<table>_version` (the Delta version of a table read)."""
    return column in PROVENANCE_COLUMNS or column.endswith("_version")


def frame_hash(frame: pl.DataFrame) -> str:
    """sha256 of the frame's content (see the module's docstring)."""
    content = frame.select([c for c in frame.columns if not is_provenance(c)])
    plain = [c for c, dtype in content.schema.items() if not dtype.is_nested()]
    # Only the row order is sorted, and rows are serialized a chunk at a time: hashing holds a
    # chunk, not copies of a frame that may be a layer of per-token lists.
    order = pl.int_range(pl.len(), dtype=pl.UInt32)
    if plain:
        order = order.sort_by(plain, nulls_last=True, maintain_order=True)
    rows = content.select(order).to_series()
    compat = pl.CompatLevel.oldest()
    sha = hashlib.sha256(content.clear().to_arrow(compat_level=compat).schema.serialize())
    for start in range(0, content.height, HASH_CHUNK_ROWS):
        chunk = content[rows.slice(start, HASH_CHUNK_ROWS)].rechunk()
        for batch in chunk.to_arrow(compat_level=compat).to_batches():
            sha.update(batch.serialize())
    return sha.hexdigest()


def partition_hashes(
    frame: pl.DataFrame, column: str | None, partitions: Sequence[str] = ()
) -> dict[str | None, str]:
    """The content hash of each of `partitions` (keys as strings; a partition without rows has
    the hash of no rows), or of the whole frame by None when there is no partition column."""
    if column is None:
        return {None: frame_hash(frame)}
    keys = frame[column].cast(pl.String)
    # One partition at a time; a frame of one partition (a run of one layer) is not copied.
    return {
        p: frame_hash(frame if keys.eq(p).all() else frame.filter(keys.eq(p))) for p in partitions
    }


@dataclass(frozen=True)
class Previous:
    """A partition's last write: its content hash and the data version it was given."""

    content_hash: str | None
    data_version: str | None


def data_version(
    written: Mapping[str | None, str], previous: Mapping[str | None, Previous | None]
) -> str:
    """The data version of a write of `written` (partition -> content hash); see the module's
    docstring."""
    before = [previous.get(partition) for partition in written]
    unchanged = all(
        last is not None and last.data_version and last.content_hash == written[partition]
        for partition, last in zip(written, before, strict=True)
    )
    if written and unchanged:
        counts = Counter(last.data_version for last in before)
        return min(counts, key=lambda version: (-counts[version], version))
    return digest(sorted([str(p), h] for p, h in written.items()))[:VERSION_LENGTH]
