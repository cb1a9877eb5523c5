"""`repair`: a torn newest commit, lost or unreadable data files and files no commit names are
each repaired in place, with every readable row kept and the rows to rebuild named."""

import os
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from autointerp.errors import InputError
from autointerp.storage.delta import read_table, table_version, write_partitions
from autointerp.storage.repair import ASIDE, repair_root, repair_table

HOUR = 3600


def layer_frame(layer: int, value: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"layer": [layer] * 3, "neuron": [0, 1, 2], "value": [value] * 3})


def write(uri: str, frame: pl.DataFrame, layer: int) -> int:
    return write_partitions(
        uri, frame, partition_column="layer", partitions=[layer], commit_metadata={}
    )


def rows(uri: str) -> pl.DataFrame:
    return read_table(uri).sort("layer", "neuron")


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """Layers 0-2 written once (versions 0-2), then layer 1 rewritten (version 3)."""
    uri = str(tmp_path / "scores")
    for layer in range(3):
        write(uri, layer_frame(layer), layer)
    write(uri, layer_frame(1, value=7), 1)
    return Path(uri)


def commit(table: Path, version: int) -> Path:
    return table / "_delta_log" / f"{version:020d}.json"


def data_files(table: Path, layer: int) -> list[Path]:
    return sorted((table / f"layer={layer}").glob("*.parquet"))


def current_file(table: Path, layer: int) -> Path:
    """The layer's data file the table's newest version reads (not one a rewrite replaced)."""
    (uri,) = [u for u in DeltaTable(str(table)).file_uris() if f"/layer={layer}/" in u]
    return Path(uri.removeprefix("file://"))


def test_a_healthy_table_is_left_as_it_is(table):
    before = {p: p.stat().st_mtime_ns for p in table.rglob("*")}
    report = repair_table(str(table))
    assert not report.changed and report.rematerialize == {}
    assert report.lines() == ["scores: healthy (version 3)"]
    assert {p: p.stat().st_mtime_ns for p in table.rglob("*")} == before


def test_a_torn_newest_commit_is_moved_aside_and_the_previous_version_kept(table):
    at_version_2 = read_table(str(table), version=2).sort("layer", "neuron")
    text = commit(table, 3).read_text()
    commit(table, 3).write_text(text[: len(text) * 2 // 3])  # the commit's tail is lost
    with pytest.raises(InputError, match="autointerp repair"):
        rows(str(table))

    report = repair_table(str(table))

    assert report.moved_commits == [3] and report.version == 2
    assert report.rematerialize == {"layer": {"1"}}  # read from the lines that still parse
    assert rows(str(table)).equals(at_version_2)
    assert (table / ASIDE / "_delta_log" / commit(table, 3).name).read_text() != ""
    # The table takes writes again, and the rewrite of the lost layer is version 3.
    assert write(str(table), layer_frame(1, value=8), 1) == 3
    assert rows(str(table)).filter(pl.col("layer") == 1)["value"].to_list() == [8, 8, 8]


def test_a_commit_of_garbage_names_no_partition_so_everything_is_to_be_rebuilt(table):
    commit(table, 3).write_bytes(b"\x00\x01 not json {")
    report = repair_table(str(table))
    assert report.moved_commits == [3] and report.rematerialize == {"*": {"*"}}


def test_an_unreadable_older_commit_is_reported_not_rolled_back(table):
    commit(table, 1).write_bytes(b"{not json")
    report = repair_table(str(table))
    assert report.moved_commits == [] and report.version is None
    assert "not by a torn newest commit" in report.notes[0]
    assert commit(table, 3).exists()


def test_a_lost_data_file_is_dropped_from_the_log_and_its_layer_named(table):
    current_file(table, 1).unlink()
    with pytest.raises(InputError, match="autointerp repair"):
        rows(str(table))

    report = repair_table(str(table))

    assert len(report.dropped_files) == 1 and report.rematerialize == {"layer": {"1"}}
    assert rows(str(table))["layer"].to_list() == [0, 0, 0, 2, 2, 2]
    write(str(table), layer_frame(1, value=9), 1)  # rematerializing the layer restores it
    assert rows(str(table)).height == 9


def test_a_data_file_that_is_not_parquet_is_moved_aside_and_dropped(table):
    broken = current_file(table, 2)
    broken.write_bytes(b"not parquet")
    report = repair_table(str(table))
    assert report.rematerialize == {"layer": {"2"}}
    assert not broken.exists()
    assert (table / ASIDE / "layer=2" / broken.name).read_bytes() == b"not parquet"
    assert sorted(set(rows(str(table))["layer"].to_list())) == [0, 1]


def test_files_no_commit_names_are_deleted_once_old_enough(table):
    # Layer 1's first file is no longer in the table, but a commit names it (time travel to
    # version 1 reads it): it stays, however old.
    committed = [*data_files(table, 0), *data_files(table, 1)]
    old = table / "layer=0" / "part-killed-before-commit.parquet"
    young = table / "layer=0" / "part-being-written.parquet"
    old.write_bytes(b"")
    young.write_bytes(b"")
    for path in [old, *committed]:
        os.utime(path, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))

    report = repair_table(str(table))

    assert report.abandoned_files == ["layer=0/part-killed-before-commit.parquet"]
    assert not old.exists() and young.exists()
    assert all(path.exists() for path in committed)
    assert read_table(str(table), version=1).height == 6


def test_repairing_a_model_root_covers_each_table_and_only_tables(tmp_path, table):
    other = tmp_path / "explanations"
    write(str(other), layer_frame(4), 4)
    (tmp_path / "not-a-table").mkdir()
    data_files(other, 4)[0].unlink()
    reports = repair_root(str(tmp_path))
    assert [Path(r.table).name for r in reports] == ["explanations", "scores"]
    assert [r.rematerialize for r in reports] == [{"layer": {"4"}}, {}]
    assert table_version(str(other)) == 1


def test_object_storage_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(InputError, match="local file system"):
        repair_table("s3://bucket/scores")
    with pytest.raises(InputError, match="nothing to repair"):
        repair_root(str(tmp_path / "absent"))
