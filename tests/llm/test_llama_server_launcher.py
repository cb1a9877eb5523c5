"""The launcher of the opt-in llama.cpp tests and benchmark says why a server did not start."""

from __future__ import annotations

import subprocess
import sys

from autointerp.testing.llama_server import _why


def _exited(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code])
    process.wait(timeout=60)
    return process


def test_a_server_killed_by_an_illegal_instruction_is_named_with_the_fix(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("")
    crashed = _exited("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    why = _why(crashed, log)
    assert why.startswith("illegal instruction") and "CMAKE_ARGS" in why


def test_another_exit_shows_the_last_lines_it_wrote(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("loading\nerror: no such model file\n")
    assert _why(_exited("raise SystemExit(3)"), log) == (
        "exit status 3: loading | error: no such model file"
    )
