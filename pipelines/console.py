"""What the `autointerp` command prints: progress as it comes, and every failure in one line that
names the cause and where the full trace is kept (Dagster's tracebacks go to a log file, not the
terminal)."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from deltalake.exceptions import DeltaError

from autointerp.errors import AutointerpError
from autointerp.safe_text import printable

LOG_FOLDER = "logs"
RUN_LOG = "runs.log"  # everything Dagster printed, tracebacks included
ERROR_LOG = "last-error.log"


class _QuietErrors:
    """Stands in for stderr while a run executes: Dagster's log lines pass, its ERROR records
    are cut to their first line, and everything is appended, whole, to the run log."""

    def __init__(self, terminal: TextIO, log: TextIO) -> None:
        self.terminal, self.log = terminal, log

    def write(self, text: str) -> int:
        self.log.write(text)
        first, _, rest = text.partition("\n")
        if " - ERROR - " in first and rest.strip():
            text = first + "\n"
        return self.terminal.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()


@contextlib.contextmanager
def quiet_tracebacks(home: Path) -> Iterator[Path]:
    """Within the block, Dagster's error records print one line each; the whole of what it
    printed is appended to `home/logs/runs.log`, whose path is yielded."""
    folder = home / LOG_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RUN_LOG
    terminal = sys.stderr
    with path.open("a") as log:
        sys.stderr = _QuietErrors(terminal, log)  # type: ignore[assignment]
        try:
            yield path
        finally:
            sys.stderr = terminal


def one_line(error: BaseException) -> str:
    """A failure as a person reads it: the cause, and the fix where one is known."""
    if isinstance(error, AutointerpError):
        text = str(error)
    elif isinstance(error, DeltaError):
        text = (
            f"a Delta table cannot be read or written ({_first(error)}): `autointerp repair` "
            "restores a table's last readable version"
        )
    elif isinstance(error, sqlite3.Error) or type(error).__module__.startswith("sqlalchemy"):
        text = (
            f"a database file cannot be used ({_first(error)}): check that AUTOINTERP_HOME "
            "(and DAGSTER_HOME) are writable and not full"
        )
    elif isinstance(error, OSError) and error.filename:
        text = f"{error.strerror or type(error).__name__}: {error.filename}"
    else:
        text = f"{type(error).__name__}: {_first(error)}"
    return printable(text, keep_lines=False)


def _first(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def keep_trace(error: BaseException, home: Path) -> Path | None:
    """Write the error's full traceback to `home/logs/last-error.log`; its path, or None when
    it cannot be written (the message then stands alone)."""
    path = home / LOG_FOLDER / ERROR_LOG
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path
