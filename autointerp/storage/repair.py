"""Recovery of damaged Delta tables, losing nothing that can be read.

Three kinds of damage, each repaired in place on a local table:
- the newest commits cannot be read (a torn or overwritten log file): each unreadable commit is
  moved aside into `<table>/_autointerp_repair/`, newest first, until the table opens at its last
  readable version; the rows those commits wrote are named, to be materialized again;
- data files the log names are gone, or are not parquet: unreadable ones are moved aside, then
  delta-rs's `repair` commits the removal of their entries; their partitions are named;
- data files no commit names (a writer killed before its commit) older than `min_age`: deleted.

Nothing readable is deleted: moved commits and files stay in `_autointerp_repair/` (Delta readers
skip folders whose name starts with `_`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import polars as pl
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from autointerp.errors import InputError

ASIDE = "_autointerp_repair"
LOG = "_delta_log"
# A data file no commit names, younger than this, may belong to a write still in progress.
MIN_AGE_S = 3600.0


@dataclass
class TableRepair:
    """What repairing one table did: nothing, for a healthy table."""

    table: str
    moved_commits: list[int] = field(default_factory=list)
    version: int | None = None  # the version the table opens at after repair
    dropped_files: list[str] = field(default_factory=list)  # entries removed from the log
    abandoned_files: list[str] = field(default_factory=list)  # unreferenced files deleted
    abandoned_bytes: int = 0
    # The rows to materialize again, {partition column: values}; "*" when a moved commit could
    # not say which it wrote.
    rematerialize: dict[str, set[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.moved_commits or self.dropped_files or self.abandoned_files)

    def lines(self) -> list[str]:
        name = Path(self.table).name
        if not self.changed and not self.notes:
            return [f"{name}: healthy (version {self.version})"]
        lines = []
        if self.moved_commits:
            lines.append(
                f"{name}: commits {self.moved_commits} were unreadable and are moved to "
                f"{ASIDE}/; the table is back at version {self.version}"
            )
        if self.dropped_files:
            lines.append(
                f"{name}: {len(self.dropped_files)} data files were lost or unreadable; their "
                "entries are removed from the log"
            )
        if self.abandoned_files:
            lines.append(
                f"{name}: deleted {len(self.abandoned_files)} files no commit names "
                f"({self.abandoned_bytes:,} bytes, left by writes that never committed)"
            )
        lines.extend(f"{name}: {note}" for note in self.notes)
        return lines


def repair_table(uri: str, *, min_age_s: float = MIN_AGE_S) -> TableRepair:
    """Bring the local table at `uri` back to a readable state (see the module's docstring)."""
    root = _local(uri)
    report = TableRepair(table=uri)
    if not (root / LOG).is_dir():
        report.notes.append("not a Delta table (no _delta_log/); left alone")
        return report
    table = _open_readable(root, report)
    if table is None:
        return report
    _drop_lost_files(root, table, report)
    _delete_abandoned(root, table, report, min_age_s)
    report.version = table.version()
    return report


def repair_root(root: str, *, min_age_s: float = MIN_AGE_S) -> list[TableRepair]:
    """Repair every Delta table directly under the local folder `root` (one model's tables)."""
    folder = _local(root)
    if not folder.is_dir():
        raise InputError(f"{root}: no tables here yet; nothing to repair")
    tables = sorted(p for p in folder.iterdir() if (p / LOG).is_dir())
    return [repair_table(str(table), min_age_s=min_age_s) for table in tables]


def _local(uri: str) -> Path:
    if "://" in uri and not uri.startswith("file://"):
        raise InputError(
            f"{uri}: only tables on a local file system can be repaired here; for object "
            "storage, move the unreadable commit object out of _delta_log/ by hand"
        )
    return Path(uri.removeprefix("file://"))


def _open_readable(root: Path, report: TableRepair) -> DeltaTable | None:
    """The table at its newest readable version, moving newer commits that do not parse aside
    (only those: a table that fails for another reason is reported and left as it is)."""
    while True:
        try:
            return DeltaTable(str(root))
        except TableNotFoundError:
            report.notes.append("no readable commit is left; materialize its asset again")
            report.rematerialize.setdefault("*", set()).add("*")
            return None
        except DeltaError as error:
            commits = _commit_files(root)
            if not commits or _parses(commits[-1]):
                report.notes.append(
                    f"unreadable, but not by a torn newest commit; left as it is ({error})"
                )
                return None
            newest = commits[-1]
            moved = _aside(root, newest)
            _drop_checkpoints_from(root, int(newest.stem))
            report.moved_commits.append(int(newest.stem))
            for column, values in _written_by(moved).items():
                report.rematerialize.setdefault(column, set()).update(values)


def _parses(commit: Path) -> bool:
    try:
        _actions(commit, strict=True)
    except ValueError:
        return False
    return True


def _actions(commit: Path, *, strict: bool = False) -> list[dict]:
    """The commit's actions, one JSON object a line; lines that do not parse are skipped, or
    raise ValueError when `strict`."""
    actions = []
    for line in commit.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError:
            if strict:
                raise
            continue
        if isinstance(action, dict):
            actions.append(action)
        elif strict:
            raise ValueError(f"{commit}: a line is not a JSON object")
    return actions


def _commit_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / LOG).glob("*.json") if p.stem.isdigit())


def _aside(root: Path, path: Path) -> Path:
    """Move `path` (a file of the table) into the table's `_autointerp_repair/`, keeping its
    path relative to the table; an earlier file of the same name is kept with a suffix."""
    target = root / ASIDE / path.relative_to(root)
    if target.exists():
        target = target.with_name(f"{target.name}.{time.time_ns()}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(path, target)
    return target


def _drop_checkpoints_from(root: Path, version: int) -> None:
    """A checkpoint at or after a moved commit describes a state that no longer exists."""
    for path in (root / LOG).glob("*.checkpoint*.parquet"):
        if int(path.name.split(".")[0]) >= version:
            _aside(root, path)
    last = root / LOG / "_last_checkpoint"
    if last.exists():
        try:
            stale = json.loads(last.read_text())["version"] >= version
        except (ValueError, KeyError, TypeError):
            stale = True
        if stale:
            _aside(root, last)


def _written_by(commit: Path) -> dict[str, set[str]]:
    """The partitions an unreadable commit wrote, from whatever lines of it still parse; "*"
    when none of them says."""
    written: dict[str, set[str]] = {}
    for action in _actions(commit):
        for kind in ("add", "remove"):
            for column, value in ((action.get(kind) or {}).get("partitionValues") or {}).items():
                written.setdefault(column, set()).add(str(value))
    return written or {"*": {"*"}}


def _drop_lost_files(root: Path, table: DeltaTable, report: TableRepair) -> None:
    """Remove the log's entries for data files that are gone or are not parquet."""
    actions = _add_actions(table).to_dict(as_series=False)
    partitions = {
        k[len("partition.") :]: v for k, v in actions.items() if k.startswith("partition.")
    }
    for i, relative in enumerate(actions.get("path", [])):
        path = root / unquote(relative)
        if not path.exists():
            lost = True
        else:
            try:
                pq.read_metadata(path)
                lost = False
            except Exception:  # any unreadable footer: not a parquet file this table can use
                _aside(root, path)
                lost = True
        if lost:
            report.dropped_files.append(relative)
            for column, values in partitions.items():
                report.rematerialize.setdefault(column, set()).add(str(values[i]))
    if report.dropped_files:
        result = table.repair(
            commit_properties=CommitProperties(
                custom_metadata={"autointerp_repair": json.dumps(report.dropped_files)}
            )
        )
        missing = set(report.dropped_files) - {unquote(p) for p in result["files_removed"]}
        if missing:
            report.notes.append(f"delta-rs kept entries for {sorted(missing)}")


def _add_actions(table: DeltaTable) -> pl.DataFrame:
    """The table's current data files: path, and `partition.<column>` values."""
    return pl.DataFrame(table.get_add_actions(flatten=True))


def _delete_abandoned(root: Path, table: DeltaTable, report: TableRepair, min_age_s: float) -> None:
    """Delete data files no commit of the log names, older than `min_age_s`."""
    named = _named_files(root)
    if named is None:
        report.notes.append(
            "the log's early commits are checkpointed away, so files no commit names cannot be "
            "told apart; abandoned files left alone"
        )
        return
    named |= {unquote(p) for p in _add_actions(table)["path"]}
    cutoff = time.time() - min_age_s
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0].startswith(("_", ".")) or not path.is_file():
            continue
        if relative.as_posix() in named or path.stat().st_mtime > cutoff:
            continue
        report.abandoned_bytes += path.stat().st_size
        report.abandoned_files.append(relative.as_posix())
        path.unlink()


def _named_files(root: Path) -> set[str] | None:
    """Every data file any commit in the log adds or removes; None when the log no longer holds
    every commit since version 0."""
    commits = _commit_files(root)
    if not commits or [int(p.stem) for p in commits] != list(range(len(commits))):
        return None
    named: set[str] = set()
    # Files of commits moved aside are kept with them, should someone want to read them.
    for commit in [*commits, *(root / ASIDE / LOG).glob("*.json*")]:
        for action in _actions(commit):
            for kind in ("add", "remove"):
                if entry := action.get(kind):
                    named.add(unquote(entry["path"]))
    return named
