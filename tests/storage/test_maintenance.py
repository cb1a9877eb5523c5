"""Compaction and vacuum: fewer files, the same rows, and lineage's versions kept."""

import os
import time

import polars as pl
import pytest

from autointerp.errors import InputError
from autointerp.storage.delta import commit_history, read_table, write_partitions
from autointerp.storage.maintenance import lineage_versions, maintain_root, maintain_table


def write(uri: str, frame: pl.DataFrame, **kwargs) -> int:
    return write_partitions(
        uri, frame, partition_column="layer", partitions=[0], commit_metadata={}, **kwargs
    )


def records(value: int) -> pl.DataFrame:
    return pl.DataFrame({"layer": [0] * 4, "neuron": [0, 1, 2, 3], "value": [value] * 4})


def test_compaction_leaves_one_file_per_partition_and_the_same_rows(tmp_path):
    uri = str(tmp_path / "explanations")
    for explainer in ("a", "b", "c", "d"):  # explainers side by side: a file each
        frame = records(1).with_columns(explainer=pl.lit(explainer))
        write(uri, frame, replace_within={"explainer": [explainer]})
    before = read_table(uri).sort("explainer", "neuron")

    report = maintain_table(uri, retention_hours=168)

    assert (report.files_before, report.files_after) == (4, 1)
    assert read_table(uri).sort("explainer", "neuron").equals(before)
    # A commit that changed no row; time travel within the retention window still works.
    assert "OPTIMIZE" in [c["operation"] for c in commit_history(uri, limit=3)]
    assert read_table(uri, version=1).height == 8
    assert "4 -> 1 data files" in report.line()


def test_vacuum_keeps_every_version_current_rows_name(tmp_path):
    root = str(tmp_path)
    write(f"{root}/neuron_records", records(1))  # version 0: what the scores read
    write(
        f"{root}/scores",
        records(0).with_columns(neuron_records_version=pl.lit(0, dtype=pl.Int64)),
    )
    write(f"{root}/neuron_records", records(2))  # version 1: rewritten, not rescored
    write(f"{root}/explanations", records(1))
    write(f"{root}/explanations", records(2))  # nothing names explanations' version 0
    tables = ["neuron_records", "scores", "explanations"]
    assert lineage_versions(root, tables) == {"neuron_records": [0]}

    reports = maintain_root(root, tables, retention_hours=0)

    assert read_table(f"{root}/neuron_records", version=0)["value"].to_list() == [1] * 4
    assert read_table(f"{root}/neuron_records")["value"].to_list() == [2] * 4
    with pytest.raises(InputError):  # no lineage needs it: its files are gone
        read_table(f"{root}/explanations", version=0)
    assert read_table(f"{root}/explanations")["value"].to_list() == [2] * 4
    kept = {r.table.rsplit("/", 1)[-1]: r.kept_versions for r in reports}
    assert kept == {"neuron_records": [0], "scores": [], "explanations": []}


def test_files_no_commit_names_go_only_once_old(tmp_path):
    uri = str(tmp_path / "scores")
    write(uri, records(1))
    young = tmp_path / "scores" / "layer=0" / "part-young.parquet"
    old = tmp_path / "scores" / "layer=0" / "part-old.parquet"
    for stray in (young, old):
        records(9).write_parquet(stray)
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))

    maintain_table(uri, retention_hours=0)

    assert young.exists() and not old.exists()  # a younger one may be a write in progress
    assert read_table(uri)["value"].to_list() == [1] * 4
