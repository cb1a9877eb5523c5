"""What the command prints on failure: one line naming the cause and the fix, never raw text."""

import sqlite3
import sys

import pytest
from deltalake.exceptions import DeltaError
from sqlalchemy.exc import OperationalError

from autointerp.errors import InputError
from pipelines.console import keep_trace, one_line, quiet_tracebacks


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InputError("layers [7] out of range"), "layers [7] out of range"),
        (DeltaError("Kernel error: Json error\n   0: <unknown>"), "autointerp repair"),
        (sqlite3.DatabaseError("file is not a database"), "AUTOINTERP_HOME"),
        (
            OperationalError("INSERT", {}, sqlite3.OperationalError("attempt to write a readonly")),
            "are writable and not full",
        ),
        (PermissionError(13, "Permission denied", "/home/x/delta"), "/home/x/delta"),
        (ValueError("bad \x1b[2J value\nsecond line"), "ValueError: bad \\x1b[2J value"),
    ],
)
def test_each_failure_is_one_line_with_its_fix(error, expected):
    line = one_line(error)
    assert expected in line
    assert "\n" not in line and "\x1b" not in line


def test_dagster_error_records_print_their_first_line_and_log_everything(tmp_path, capsys):
    with quiet_tracebacks(tmp_path) as log:
        sys.stderr.write("2026 - dagster - ERROR - step failed\nTraceback (most recent call)\n")
        sys.stderr.write("2026 - dagster - INFO - progress 50%\n")
    err = capsys.readouterr().err
    assert err == "2026 - dagster - ERROR - step failed\n2026 - dagster - INFO - progress 50%\n"
    assert "Traceback (most recent call)" in log.read_text()


def test_the_full_trace_is_kept_in_a_file(tmp_path):
    try:
        raise RuntimeError("deep failure")
    except RuntimeError as error:
        path = keep_trace(error, tmp_path)
    assert path == tmp_path / "logs" / "last-error.log"
    assert "Traceback" in path.read_text() and "deep failure" in path.read_text()
