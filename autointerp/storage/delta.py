"""Delta tables, the project's storage: partition-exact writes, pruned reads, time travel.

A write of partitions replaces exactly those partitions in one commit (an overwrite with a
`<column> IN (...)` predicate) and never touches another; a frame holding rows of a partition it
was not asked to write is refused, so a bug cannot write into a neighbour. A crash before the
commit leaves the table at its previous version: Delta only sees data files once a commit names
them. URIs are local paths or `s3://`, `gs://`, `az://` URIs with their `storage_options`.

Partition values may be given as strings (Dagster's partition keys, e.g. "5") or typed values;
they are compared as the partition column's type, so integer partition columns work.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from autointerp.errors import InputError

PartitionValue = int | str

# What reading a damaged table raises: a broken log (DeltaError), a data file gone (OSError), a
# data file that is not parquet (polars' reader panics or reports a compute error).
_UNREADABLE = (DeltaError, OSError, pl.exceptions.ComputeError, pl.exceptions.PanicException)


# Tries of a commit that loses a race with another writer of the same table.
COMMIT_ATTEMPTS = 8
# Commit metadata: the {column: values} a write replaced (every row when empty).
REPLACED_KEY = "autointerp_replaced"

# Row groups small enough that a read of one neuron (rows are written sorted by neuron) skips
# most of a layer by the groups' statistics: lineage reads one neuron out of 1,536. A table with
# one heavy row per neuron (neuron_records) asks for fewer rows per group.
ROW_GROUP_ROWS = 4096


class TableNotMaterializedError(InputError):
    """The table does not exist yet: nothing has written it."""


def write_partitions(
    uri: str,
    frame: pl.DataFrame,
    *,
    partition_column: str | None,
    partitions: Sequence[PartitionValue] | None,
    commit_metadata: Mapping[str, str],
    replace_within: Mapping[str, Sequence[str]] | None = None,
    storage_options: Mapping[str, str] | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> int:
    """Write `frame` in one commit and return the Delta version it created.

    With a partition column, exactly `partitions` are replaced (schema additions merge);
    without one, the whole table is replaced, schema included. The first write creates the table.
    `replace_within` narrows the replacement to rows whose columns hold the listed values (e.g.
    {"explainer": ["a"]}: rows of other explainers in those partitions stay), and the frame may
    hold no other values there. A table written before it had such a column has rows that belong
    to no value of it: those partitions are replaced whole.
    """
    options = dict(storage_options) if storage_options else None
    data = frame.to_arrow()
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        existing = _open_for_write(uri, options)
        layout, replaced = _layout(
            uri, frame, existing, partition_column, partitions, replace_within
        )
        try:
            write_deltalake(
                existing if existing is not None else uri,
                data,
                mode="overwrite",
                storage_options=options,
                commit_properties=CommitProperties(
                    custom_metadata={**commit_metadata, REPLACED_KEY: json.dumps(replaced)}
                ),
                writer_properties=WriterProperties(max_row_group_size=row_group_rows),
                **layout,
            )
        except (CommitFailedError, DeltaError) as error:
            # Another writer committed first (or created the table): re-read the table and
            # re-apply this write, which replaces only its own partitions.
            if attempt == COMMIT_ATTEMPTS or not _conflict(error):
                raise
            time.sleep(random.uniform(0.05, 0.2) * attempt)
            continue
        # A table object written through holds the version of its own commit, even when
        # another writer committed meanwhile; a table just created is read back.
        if existing is not None:
            return existing.version()
        return _open(uri, storage_options).version()
    raise AssertionError("unreachable: the last attempt returns or raises")


def write_each_partition(
    uri: str,
    frame: pl.DataFrame,
    *,
    partition_column: str,
    partitions: Sequence[PartitionValue],
    **options: Any,
) -> list[int]:
    """`write_partitions` of each of `partitions` in a commit of its own, in the order given;
    the versions created. delta-rs buffers a write at about 2.5 times its frame, so writing one
    partition at a time bounds a write of many layers by one layer's memory. Rows of a partition
    not listed are refused before anything is written."""
    values = _checked_partitions(uri, frame, partition_column, partitions)
    return [
        write_partitions(
            uri,
            frame.filter(pl.col(partition_column) == value),
            partition_column=partition_column,
            partitions=[value],
            **options,
        )
        for value in values
    ]


def _conflict(error: Exception) -> bool:
    """Whether a failed commit lost a race with another writer (worth re-reading and trying)."""
    if isinstance(error, CommitFailedError):
        return True
    text = str(error).lower()
    return "already exists" in text or ("version" in text and "conflict" in text)


def _layout(
    uri: str,
    frame: pl.DataFrame,
    existing: DeltaTable | None,
    partition_column: str | None,
    partitions: Sequence[PartitionValue] | None,
    replace_within: Mapping[str, Sequence[str]] | None,
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The write's options (predicate, partitioning, schema mode) against the table as it is
    now, and what it replaces {column: values}, recorded in the commit for readers."""
    replaced: dict[str, list[Any]] = {}
    if partition_column is None:
        if partitions is not None:
            raise InputError(f"{uri}: partitions {list(partitions)} given without a column")
        # partition_by=[] also unpartitions a table that was once partitioned.
        return {"partition_by": [], "schema_mode": "overwrite"}, replaced
    values = _checked_partitions(uri, frame, partition_column, partitions)
    if existing is not None and existing.metadata().partition_columns != [partition_column]:
        # A table laid out another way (e.g. written before it was keyed by this column) is
        # replaced whole in the new layout; its earlier versions stay readable by time travel.
        return {"partition_by": [partition_column], "schema_mode": "overwrite"}, replaced
    predicate = [_in_predicate(partition_column, values)]
    replaced[partition_column] = values
    known = existing.schema().to_arrow().names if existing is not None else []
    for column, allowed in (replace_within or {}).items():
        _checked_partitions(uri, frame, column, list(allowed))
        if column in known:
            predicate.append(_in_predicate(column, list(allowed)))
            replaced[column] = list(allowed)
    layout = {
        "predicate": " AND ".join(predicate),
        "partition_by": [partition_column],
        "schema_mode": "merge",
    }
    return layout, replaced


def read_table(
    uri: str,
    *,
    partition_column: str | None = None,
    partitions: Sequence[PartitionValue] | None = None,
    version: int | None = None,
    columns: Sequence[str] | None = None,
    where: pl.Expr | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Read a table, or only `partitions` of it (other partitions' files are never opened).

    `version` reads the table as it was at that Delta version (time travel). `where` filters
    rows during the scan, so row groups whose statistics exclude it are skipped.
    """
    table = _open(uri, storage_options, version)
    names = table.schema().to_arrow().names
    wanted = [*([partition_column] if partition_column else []), *(columns or [])]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise InputError(f"Delta table {uri} has no column {missing}; it has {names}")
    try:
        scan = pl.scan_delta(table)
        if partition_column is not None and partitions is not None:
            dtype = scan.collect_schema()[partition_column]
            values = _as_column_type(uri, partition_column, partitions, dtype)
            scan = scan.filter(pl.col(partition_column).is_in(values))
        if where is not None:
            scan = scan.filter(where)
        if columns is not None:  # the partition column always comes along
            scan = scan.select(list(dict.fromkeys(wanted)))
        return scan.collect()
    except _UNREADABLE as error:
        raise _corrupt(uri, error) from error


def partition_values(
    uri: str, column: str, storage_options: Mapping[str, str] | None = None
) -> set[str]:
    """The values of a partition column the table holds now (none for a table never written, or
    one not partitioned by `column`), read from the log: no data file is opened."""
    try:
        table = _open(uri, storage_options)
    except TableNotMaterializedError:
        return set()
    if table.metadata().partition_columns != [column]:
        return set()
    return {str(p[column]) for p in table.partitions()}


def table_version(uri: str, storage_options: Mapping[str, str] | None = None) -> int | None:
    """The table's latest Delta version, or None when it has never been written."""
    try:
        return _open(uri, storage_options).version()
    except TableNotMaterializedError:
        return None


def commit_history(
    uri: str, limit: int | None = None, storage_options: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The table's commits, newest first, each with its custom metadata as top-level keys."""
    return _open(uri, storage_options).history(limit)


def replaced_rows(commit: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """What a commit of `write_partitions` replaced, {column: values as text} (an empty dict:
    the whole table); None for a commit that did not record it."""
    recorded = commit.get(REPLACED_KEY)
    if recorded is None:
        return None
    return {column: [str(v) for v in values] for column, values in json.loads(recorded).items()}


def _open(
    uri: str, storage_options: Mapping[str, str] | None, version: int | None = None
) -> DeltaTable:
    options = dict(storage_options) if storage_options else None
    try:
        table = DeltaTable(uri, storage_options=options)
    except TableNotFoundError as error:
        raise TableNotMaterializedError(
            f"Delta table {uri} has not been materialized yet; materialize its asset first"
        ) from error
    except _UNREADABLE as error:
        raise _corrupt(uri, error) from error
    if version is None or version == table.version():
        return table
    if not 0 <= version <= table.version():
        raise InputError(f"Delta table {uri} has versions 0 to {table.version()}, not {version}")
    try:
        table.load_as_version(version)
    except _UNREADABLE as error:
        raise _corrupt(uri, error) from error
    return table


def _open_for_write(uri: str, options: dict[str, str] | None) -> DeltaTable | None:
    """The existing table, or None for a first write; a corrupt table is never written over."""
    try:
        return _open(uri, options)
    except TableNotMaterializedError:
        return None


def _corrupt(uri: str, error: BaseException) -> InputError:
    return InputError(
        f"Delta table {uri} is corrupt or unreadable ({type(error).__name__}: "
        f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); `autointerp "
        "repair` brings it back to its last readable version and names what to materialize again"
    )


def _checked_partitions(
    uri: str,
    frame: pl.DataFrame,
    column: str,
    partitions: Sequence[PartitionValue] | None,
) -> list[Any]:
    """`partitions` in the column's type, after refusing rows of any partition not listed."""
    if not partitions:
        raise InputError(f"{uri}: name the partitions of {column!r} to write")
    if column not in frame.columns:
        raise InputError(f"{uri}: the frame has no partition column {column!r}")
    values = _as_column_type(uri, column, partitions, frame.schema[column])
    present = frame.get_column(column).unique()
    stray = present.filter(~present.is_in(values) | present.is_null())
    if stray.len():
        raise InputError(
            f"{uri}: the frame holds rows of {column} {stray.to_list()}, "
            f"but only {values} are being written"
        )
    return values


def _as_column_type(
    uri: str, column: str, values: Sequence[PartitionValue], dtype: pl.DataType
) -> list[Any]:
    try:
        return pl.Series(column, [str(value) for value in values]).cast(dtype).to_list()
    except pl.exceptions.InvalidOperationError as error:
        raise InputError(
            f"{uri}: partitions {list(values)} are not of {column}'s type {dtype}"
        ) from error


def _in_predicate(column: str, values: Sequence[Any]) -> str:
    return f'"{column}" IN ({", ".join(_sql_literal(value) for value in values)})'


def _sql_literal(value: Any) -> str:
    if not isinstance(value, int | str):
        raise InputError(
            f"partition value {value!r}: only integer and string partitions are supported"
        )
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"
