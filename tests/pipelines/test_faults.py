"""Faults as a user meets them, through the `autointerp` command: each ends in one line that
names the cause and the fix, and recovery loses no row that was readable.

Faults covered elsewhere: killed runs (test_run_records), unreadable commits, lost and stray files
(storage/test_repair), concurrent writers (storage/test_delta), a corrupt response cache, a dead
endpoint and echoed keys (llm/test_client), every setting (config/test_validation).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import polars as pl
import pytest

from autointerp.config.settings import PROJECT_ROOT
from autointerp.storage.delta import read_table
from pipelines.cli import main
from tests.conftest import write_config

HOSTILE = (
    "plain words \x1b]0;pwned\x07 then \x1b[2J clear and \u202eevil\u202c with a \x00 nul "
    "and \x9b more words "
)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _fail(argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return str(exit_info.value)


def test_a_failing_step_prints_one_line_naming_the_endpoint(tiny_env, tiny_model_dir):
    port = _closed_port()
    write_config(
        tiny_env / "autointerp.toml",
        tiny_model_dir,
        tiny_env / "corpus",
        extra=f"""
[pipeline]
explainers = ["dead"]

[explainers.dead]
kind = "llm"
model = "m"
base_url = "http://127.0.0.1:{port}/v1"
neuron_sample = "all"
""",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--layers", "0", "--excerpts", "40"],
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("autointerp: run ") and f"127.0.0.1:{port}" in last
    assert "nothing answers" in last and "runs.log" in last
    # The whole trace is kept where the line says.
    assert "raise EndpointUnreachable" in (tiny_env / "home/logs/runs.log").read_text()


def test_damaged_tables_are_repaired_and_no_readable_row_is_lost(tiny_env, capsys):
    delta = tiny_env / "home/delta/tiny"
    main(["run", "--layers", "0", "--excerpts", "40"])
    main(["run", "--layers", "1", "--excerpts", "40"])

    def layer_0(table: str) -> pl.DataFrame:
        # Rerunning a layer records the upstream table versions it read; the rows stay the same.
        rows = read_table(str(delta / table)).filter(pl.col("layer") == 0)
        return rows.select(pl.exclude("^.*_version$")).sort(pl.all())

    kept = {table: layer_0(table) for table in ("neuron_records", "explanations", "scores")}
    # Layer 1's scores commit is torn; a data file of layer 1's explanations is lost.
    scores_log = sorted((delta / "scores/_delta_log").glob("*.json"))[-1]
    scores_log.write_text(scores_log.read_text()[:100])
    next((delta / "explanations/layer=1").glob("*.parquet")).unlink()

    message = _fail(["run", "--layers", "0", "--excerpts", "40"])
    assert "autointerp repair" in message and "\n" not in message

    capsys.readouterr()
    main(["repair"])
    out = capsys.readouterr().out
    assert "scores: commits [" in out and "explanations: 1 data files were lost" in out
    assert "to materialize again: autointerp run --model tiny --layers 1" in out

    main(["run", "--model", "tiny", "--layers", "1", "--excerpts", "40"])
    for table, rows in kept.items():
        assert layer_0(table).equals(rows), table
        assert read_table(str(delta / table)).filter(pl.col("layer") == 1).height == rows.height


def test_corpus_text_is_escaped_wherever_lineage_prints_it(tiny_env, tiny_model_dir, capsys):
    corpus = tiny_env / "hostile"
    corpus.mkdir()
    (corpus / "a.txt").write_text(HOSTILE * 400)
    write_config(tiny_env / "autointerp.toml", tiny_model_dir, corpus)
    main(["run", "--layers", "0", "--excerpts", "30"])
    capsys.readouterr()
    main(["lineage", "--layer", "0", "--neuron", "1"])
    out = capsys.readouterr().out
    assert "\\x1b" in out or "\\u202e" in out  # the hostile text is shown, as escapes
    for raw in ("\x1b", "\x07", "\x00", "\u202e", "\x9b"):
        assert raw not in out


def test_hostile_text_in_a_failure_is_escaped_too(tiny_env, capsys):
    message = _fail(["run", "--model", "no\x1b]0;title\x07pe"])
    assert "\x1b" not in message and "\\x1b" in message
