"""Keeping tables fast and small: compaction and vacuum, never at the cost of lineage.

Each write of a layer (and each explainer's rows within it) adds data files, and each rewrite
leaves the replaced files behind for time travel. Maintenance, on a local folder or an object
store alike:

- compacts: rewrites each partition's small files into few large ones (`optimize.compact`, a
  commit that changes no row; lineage skips it, since it looks only at the commits that wrote
  rows);
- vacuums: deletes files that the table's current version no longer names once they are older
  than `retention_hours`, except the files of every version that a current row names in a
  `<table>_version` column (`scores.neuron_records_version`, …): the lineage of what the tables
  hold now is read by time travel to exactly those versions, so it survives any retention, even 0.
  What goes is time travel to other versions older than the window;
- deletes data files that no commit names (writes killed before their commit), once older than
  `repair.MIN_AGE_S` whatever the retention: a younger one may belong to a write in progress.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import CommitFailedError

from autointerp.storage import delta
from autointerp.storage.repair import MIN_AGE_S

MAINTENANCE_KEY = "autointerp_maintenance"


@dataclass
class TableMaintenance:
    """What maintaining one table did."""

    table: str
    files_before: int = 0
    files_after: int = 0
    deleted_files: int = 0
    kept_versions: list[int] = field(default_factory=list)  # pinned by lineage
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        name = self.table.rstrip("/").rsplit("/", 1)[-1]
        if self.notes:
            return f"{name}: " + "; ".join(self.notes)
        pinned = f", versions {self.kept_versions} kept for lineage" if self.kept_versions else ""
        return (
            f"{name}: {self.files_before} -> {self.files_after} data files, "
            f"{self.deleted_files} unneeded files deleted{pinned}"
        )


def lineage_versions(
    model_root: str, tables: Sequence[str], storage_options: Mapping[str, str] | None = None
) -> dict[str, list[int]]:
    """Per table, the versions that current rows of the `tables` name in `<table>_version`
    columns (what lineage reads by time travel)."""
    named: dict[str, set[int]] = {}
    for table in tables:
        uri = f"{model_root}/{table}"
        if delta.table_version(uri, storage_options) is None:
            continue
        columns = [
            c
            for c in _column_names(uri, storage_options)
            if c.endswith("_version") and c.removesuffix("_version") in tables
        ]
        if not columns:
            continue
        frame = delta.read_table(uri, columns=columns, storage_options=storage_options)
        for column in columns:
            versions = frame.get_column(column).drop_nulls().unique().cast(pl.Int64).to_list()
            named.setdefault(column.removesuffix("_version"), set()).update(versions)
    return {table: sorted(versions) for table, versions in named.items()}


def _column_names(uri: str, storage_options: Mapping[str, str] | None) -> list[str]:
    options = dict(storage_options) if storage_options else None
    return DeltaTable(uri, storage_options=options).schema().to_arrow().names


def maintain_table(
    uri: str,
    *,
    retention_hours: int,
    keep_versions: Sequence[int] = (),
    storage_options: Mapping[str, str] | None = None,
) -> TableMaintenance:
    """Compact, then vacuum the table at `uri` (see the module's docstring)."""
    report = TableMaintenance(table=uri)
    options = dict(storage_options) if storage_options else None
    table = DeltaTable(uri, storage_options=options)
    report.files_before = len(table.file_uris())
    properties = CommitProperties(custom_metadata={MAINTENANCE_KEY: "compact"})
    try:
        table.optimize.compact(commit_properties=properties)
    except CommitFailedError:  # a run wrote meanwhile; its files are compacted next time
        report.notes.append("a write committed during compaction; run maintenance again later")
    latest = DeltaTable(uri, storage_options=options)
    report.kept_versions = sorted(v for v in set(keep_versions) if v <= latest.version())
    abandoned_hours = max(retention_hours, math.ceil(MIN_AGE_S / 3600))
    for hours, full in ((retention_hours, False), (abandoned_hours, True)):
        report.deleted_files += len(
            latest.vacuum(
                retention_hours=hours,
                dry_run=False,
                enforce_retention_duration=False,
                full=full,
                keep_versions=report.kept_versions or None,
                commit_properties=CommitProperties(custom_metadata={MAINTENANCE_KEY: "vacuum"}),
            )
        )
    report.files_after = len(DeltaTable(uri, storage_options=options).file_uris())
    return report


def maintain_root(
    model_root: str,
    tables: Sequence[str],
    *,
    retention_hours: int,
    storage_options: Mapping[str, str] | None = None,
) -> list[TableMaintenance]:
    """Maintain each of one model's `tables` that exists, keeping what lineage needs."""
    root = model_root.rstrip("/")
    pinned = lineage_versions(root, tables, storage_options)
    return [
        maintain_table(
            f"{root}/{table}",
            retention_hours=retention_hours,
            keep_versions=pinned.get(table, []),
            storage_options=storage_options,
        )
        for table in tables
        if delta.table_version(f"{root}/{table}", storage_options) is not None
    ]
