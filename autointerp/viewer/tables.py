"""One model's Delta tables as the viewer reads them: open once, refreshed incrementally, every
read pruned to the partitions, columns and rows it needs, and cached per table version.

Opening a Delta table replays its log (tens of milliseconds for a table written layer by layer),
so each table stays open and is brought up to date with `update_incremental`, at most once every
`refresh_s` seconds: a page shows a write at most that late. A snapshot (version, schema, data
files per partition) is taken once per version; reads scan exactly the snapshot's files of the
partitions asked for, with the filter pushed down to the row groups' statistics (rows are written
sorted by neuron in small row groups, so one neuron's rows cost one row group). Files written
before a column was added read it as null, as Delta's schema evolution means.

Two kinds of read: `frame` caches a layer's columns per version (the small columns every neuron
of a layer shares: scores, explanation texts, split assignments), and `rows` reads one neuron's
rows of a heavy table (activations) without caching — unless `whole_layers` is set, as the
static export sets it, to read each layer once and slice it neuron by neuron. What is computed
from reads (a layer's neuron table, the overview) is cached until a table it read changes
(`derived`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from autointerp.errors import InputError

T = TypeVar("T")


class MissingTableError(InputError):
    """A table the page needs has not been materialized."""

    def __init__(self, table: str, uri: str, message: str | None = None) -> None:
        super().__init__(message or f"the table {table} has not been materialized yet ({uri})")
        self.table = table


@dataclass(frozen=True)
class Snapshot:
    """A table at one version: its schema and its data files per partition value."""

    version: int
    schema: pl.Schema  # every column, the partition column included
    column: str | None  # the partition column: "layer", or a key such as the corpus's corpus_id
    files: dict[Hashable, list[str]]  # partition value (None when unpartitioned) -> files

    @property
    def partitioned(self) -> bool:
        return self.column is not None

    @property
    def partitions(self) -> list[Any]:
        return sorted(key for key in self.files if key is not None)


class ModelTables:
    """The tables under one model's root URI (`Settings.model_root`)."""

    def __init__(
        self,
        root: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        refresh_s: float = 1.0,
        whole_layers: bool = False,
        max_frames: int = 512,
    ) -> None:
        self.root = root.rstrip("/")
        self.options = dict(storage_options) if storage_options else None
        self.refresh_s = refresh_s
        self.whole_layers = whole_layers
        self._max_frames = max_frames
        self._lock = threading.RLock()
        self._open: dict[str, DeltaTable] = {}
        self._checked: dict[str, float] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._frames: OrderedDict[tuple, Any] = OrderedDict()  # frames and what derives from them
        self._histories: dict[tuple[str, int], list[dict[str, Any]]] = {}

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    # --- versions and snapshots ----------------------------------------------------------

    def snapshot(self, table: str) -> Snapshot:
        """The table as of its latest version (checked at most every refresh_s seconds);
        MissingTableError when it has never been written."""
        with self._lock:
            now = time.monotonic()
            if table in self._snapshots and now - self._checked[table] < self.refresh_s:
                return self._snapshots[table]
            self._checked[table] = now
            handle = self._open.get(table)
            if handle is None:
                try:
                    handle = DeltaTable(self.uri(table), storage_options=self.options)
                except TableNotFoundError:
                    self._snapshots.pop(table, None)
                    raise MissingTableError(table, self.uri(table)) from None
                self._open[table] = handle
            else:
                handle.update_incremental()
            known = self._snapshots.get(table)
            if known is None or known.version != handle.version():
                self._snapshots[table] = _snapshot(handle)
            return self._snapshots[table]

    def exists(self, table: str) -> bool:
        try:
            self.snapshot(table)
        except MissingTableError:
            return False
        return True

    def version(self, table: str) -> int | None:
        """The latest version, or None when the table has never been written."""
        return self.snapshot(table).version if self.exists(table) else None

    def history(self, table: str) -> list[dict[str, Any]]:
        """The table's commits, newest first (none when never written); read once per version."""
        if not self.exists(table):
            return []
        with self._lock:
            version = self.snapshot(table).version
            key = (table, version)
            if key not in self._histories:
                self._histories[key] = self._open[table].history()
            return self._histories[key]

    def derived(self, name: str, tables: Sequence[str], compute: Callable[[], T]) -> T:
        """`compute()`, cached until one of `tables` (what it reads) has a new version; `name`
        says what it computes, and of which layer."""
        return self._memo(("derived", name, *(self.version(t) for t in tables)), compute)

    def _memo(self, key: tuple, compute: Callable[[], T]) -> T:
        """The cached value of `key`, or `compute()`'s; the least recently used go first."""
        with self._lock:
            if key in self._frames:
                self._frames.move_to_end(key)
                return self._frames[key]
        value = compute()
        with self._lock:
            self._frames[key] = value
            while len(self._frames) > self._max_frames:
                self._frames.popitem(last=False)
        return value

    # --- reads ---------------------------------------------------------------------------

    def frame(
        self,
        table: str,
        columns: Sequence[str],
        *,
        layer: int | None = None,
        key: str | None = None,
        where: pl.Expr | None = None,
        label: str = "",
    ) -> pl.DataFrame:
        """`columns` of one layer's partition, or of one key's in a keyed table (the corpus's
        corpus_id), or of every partition when neither is given; optionally filtered by `where`
        (named by `label` in the cache key), cached per table version. A column the table lacks
        reads as null."""
        snapshot = self.snapshot(table)
        partition = layer if layer is not None else key
        return self._memo(
            (table, snapshot.version, partition, tuple(columns), label),
            lambda: self._read(snapshot, columns, partition, where),
        )

    def rows(self, table: str, columns: Sequence[str], layer: int, neuron: int) -> pl.DataFrame:
        """One neuron's rows of a layer (see `matching`)."""
        wanted = list(dict.fromkeys(["neuron", *columns]))
        return self.matching(table, wanted, layer, pl.col("neuron") == neuron)

    def matching(
        self, table: str, columns: Sequence[str], layer: int, where: pl.Expr
    ) -> pl.DataFrame:
        """The rows of a layer that `where` selects (it may use only `columns`): read by
        themselves and not cached, or sliced from the cached layer when `whole_layers` is set."""
        if self.whole_layers:
            return self.frame(table, columns, layer=layer).filter(where)
        return self._read(self.snapshot(table), columns, layer, where)

    def _read(
        self,
        snapshot: Snapshot,
        columns: Sequence[str],
        partition: Hashable | None,
        where: pl.Expr | None,
    ) -> pl.DataFrame:
        # A partitioned table's files hold every column but the partition column.
        column = snapshot.column
        stored = pl.Schema({k: v for k, v in snapshot.schema.items() if k != column})
        wanted = list(dict.fromkeys(columns))
        one_partition = column is not None and partition is not None
        if one_partition:
            files = snapshot.files.get(partition, [])
        else:
            files = [f for group in snapshot.files.values() for f in group]
        if not files:
            return pl.DataFrame(schema={c: snapshot.schema.get(c, pl.Null) for c in wanted})
        # One partition's value is known: reading it from the paths (hive) costs more.
        hive = column is not None and not one_partition
        scan = pl.scan_parquet(
            files,
            schema=stored,
            hive_partitioning=hive,
            hive_schema={column: snapshot.schema[column]} if hive and column else None,
            missing_columns="insert",
            extra_columns="ignore",
            storage_options=self.options,
        )
        if one_partition and column:
            scan = scan.with_columns(pl.lit(partition, snapshot.schema[column]).alias(column))
        if where is not None:
            scan = scan.filter(where)
        frame = scan.select(c for c in wanted if c in snapshot.schema).collect()
        # Columns a newer writer adds (e.g. simulations.method) are null where absent.
        return frame.with_columns(pl.lit(None).alias(c) for c in wanted if c not in frame.columns)


def _snapshot(handle: DeltaTable) -> Snapshot:
    schema = pl.from_arrow(pa.schema(handle.schema().to_arrow()).empty_table()).schema
    partition_columns = handle.metadata().partition_columns
    if not partition_columns:
        return Snapshot(handle.version(), schema, None, {None: handle.file_uris()})
    if len(partition_columns) != 1:
        raise InputError(
            f"{handle.table_uri} is partitioned by {partition_columns}, not one column"
        )
    (column,) = partition_columns
    actions = pl.DataFrame(handle.get_add_actions(flatten=True))
    # Data files are named uniquely (a UUID each): the name pairs a file's URI with its action.
    partition_of = {
        path.rsplit("/", 1)[-1]: value
        for path, value in actions.select("path", f"partition.{column}").iter_rows()
    }
    files: dict[Hashable, list[str]] = {}
    for uri in handle.file_uris():
        files.setdefault(partition_of[uri.rsplit("/", 1)[-1]], []).append(uri)
    return Snapshot(handle.version(), schema, column, files)
