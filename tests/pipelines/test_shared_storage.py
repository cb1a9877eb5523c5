"""The `autointerp` command with its tables on object storage (a local S3 server on loopback),
and two runs of different layers started together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autointerp.storage.delta import read_table
from pipelines.cli import main
from tests.conftest import storage_section, write_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_a_run_lineage_compare_and_maintenance_on_s3(tiny_env, tiny_model_dir, s3_root, capsys):
    write_config(
        tiny_env / "autointerp.toml",
        tiny_model_dir,
        tiny_env / "corpus",
        extra=storage_section(s3_root),
    )
    main(["run", "--layers", "0", "--excerpts", "40"])
    out = capsys.readouterr().out
    assert f"Delta tables: {s3_root.uri}/tiny" in out
    options = s3_root.storage_options
    summary = read_table(f"{s3_root.uri}/tiny/score_summary", storage_options=options)
    assert summary["layer"].to_list() == [0]
    assert not (tiny_env / "home" / "delta").exists()  # nothing written locally

    main(["lineage", "--layer", "0", "--neuron", "3"])
    lineage = capsys.readouterr().out
    assert "Neuron 0/3" in lineage and "s3:/" + s3_root.bucket not in lineage
    main(["compare"])
    capsys.readouterr()

    main(["maintain", "--retention-hours", "0"])
    maintained = capsys.readouterr().out
    assert "neuron_records:" in maintained and "scores:" in maintained
    main(["lineage", "--layer", "0", "--neuron", "3"])  # lineage survives any retention
    assert capsys.readouterr().out == lineage

    with pytest.raises(SystemExit) as refused:
        main(["repair"])
    message = str(refused.value)
    assert "only tables on a local file system" in message and "\n" not in message


def test_two_runs_of_different_layers_started_together_both_finish(tiny_env):
    def start(layers: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", "--layers", layers, "--excerpts", "40"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    runs = [start("0"), start("1")]
    for process in runs:
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
    tables = tiny_env / "home" / "delta" / "tiny"
    scores = read_table(str(tables / "scores"))
    assert sorted(scores["layer"].unique()) == [0, 1]
    # The summary written last was computed from every layer's scores.
    assert sorted(read_table(str(tables / "score_summary"))["layer"]) == [0, 1]
    assert sorted(read_table(str(tables / "revision_summary"))["layer"].unique()) == [0, 1]
