"""The core Delta storage: exact partition writes, refusals, crash safety, time travel, errors."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from autointerp.errors import InputError
from autointerp.storage.delta import (
    commit_history,
    read_table,
    replaced_rows,
    table_version,
    write_each_partition,
    write_partitions,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def layer_frame(layer: int, rows: int = 3, **extra: list) -> pl.DataFrame:
    return pl.DataFrame({"layer": [layer] * rows, "neuron": list(range(rows)), **extra})


def write(uri: str, frame: pl.DataFrame, partitions: list, **metadata: str) -> int:
    return write_partitions(
        uri, frame, partition_column="layer", partitions=partitions, commit_metadata=metadata
    )


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}


def rows(uri: str, **kwargs) -> pl.DataFrame:
    return read_table(uri, **kwargs).sort("layer", "neuron")


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return str(tmp_path / "records")


def test_first_write_creates_the_table_and_reports_its_version(uri):
    assert table_version(uri) is None
    assert write(uri, layer_frame(0), [0]) == 0
    assert table_version(uri) == 0
    table = rows(uri)
    assert table.equals(layer_frame(0).select(table.columns))


def test_writing_an_integer_partition_leaves_every_other_file_untouched(uri):
    # The ready-made IO manager overwrites the whole table here (DESIGN.md, dagster #34064).
    write(uri, layer_frame(0), [0])
    before = file_hashes(Path(uri) / "layer=0")
    assert write(uri, layer_frame(1, rows=5), [1]) == 1
    assert file_hashes(Path(uri) / "layer=0") == before
    assert rows(uri, partition_column="layer", partitions=[0]).height == 3
    assert rows(uri).get_column("layer").value_counts().sort("layer").rows() == [(0, 3), (1, 5)]


def test_string_keys_select_integer_partitions(uri):
    write(uri, layer_frame(0), ["0"])
    write(uri, layer_frame(1), ["1"])
    assert rows(uri, partition_column="layer", partitions=["1"]).get_column(
        "layer"
    ).unique().to_list() == [1]


def test_several_partitions_in_one_commit_replace_exactly_them(uri):
    write(uri, pl.concat([layer_frame(0), layer_frame(1), layer_frame(2)]), [0, 1, 2])
    untouched = file_hashes(Path(uri) / "layer=2")
    version = write(uri, pl.concat([layer_frame(0, rows=1), layer_frame(1, rows=2)]), [0, 1])
    assert version == 1
    assert file_hashes(Path(uri) / "layer=2") == untouched
    counts = rows(uri).get_column("layer").value_counts().sort("layer").rows()
    assert counts == [(0, 1), (1, 2), (2, 3)]


def test_a_listed_partition_without_rows_is_emptied(uri):
    write(uri, pl.concat([layer_frame(0), layer_frame(1)]), [0, 1])
    write(uri, layer_frame(0), [0, 1])
    assert rows(uri).get_column("layer").unique().to_list() == [0]


@pytest.mark.parametrize("layers", [[0, 1], [0, None]])
def test_rows_of_a_partition_not_listed_are_refused(uri, layers):
    write(uri, pl.concat([layer_frame(0), layer_frame(1)]), [0, 1])
    stray = pl.DataFrame({"layer": layers, "neuron": [7, 7]}, schema_overrides={"layer": pl.Int64})
    with pytest.raises(InputError, match="only \\[0\\] are being written"):
        write(uri, stray, [0])
    assert table_version(uri) == 0
    assert rows(uri).height == 6


def test_each_partition_in_a_commit_of_its_own(uri):
    write(uri, pl.concat([layer_frame(0), layer_frame(1), layer_frame(2)]), [0, 1, 2])
    untouched = file_hashes(Path(uri) / "layer=2")
    frame = pl.concat([layer_frame(1, rows=2), layer_frame(0, rows=1)])
    versions = write_each_partition(
        uri, frame, partition_column="layer", partitions=["1", "0"], commit_metadata={}
    )
    assert versions == [1, 2]
    assert [replaced_rows(c) for c in commit_history(uri)[:2]] == [
        {"layer": ["0"]},
        {"layer": ["1"]},
    ]
    assert file_hashes(Path(uri) / "layer=2") == untouched
    assert rows(uri).get_column("layer").value_counts().sort("layer").rows() == [
        (0, 1),
        (1, 2),
        (2, 3),
    ]
    # A stray row is refused before any partition is written.
    with pytest.raises(InputError, match="only \\[0, 1\\] are being written"):
        write_each_partition(
            uri,
            pl.concat([frame, layer_frame(2)]),
            partition_column="layer",
            partitions=[0, 1],
            commit_metadata={},
        )
    assert table_version(uri) == 2


def test_string_partitions_with_quotes(uri):
    frame = pl.DataFrame({"profile": ["it's", "plain"], "score": [0.5, 0.7]})
    write_partitions(
        uri, frame, partition_column="profile", partitions=["it's", "plain"], commit_metadata={}
    )
    write_partitions(
        uri,
        pl.DataFrame({"profile": ["it's"], "score": [0.9]}),
        partition_column="profile",
        partitions=["it's"],
        commit_metadata={},
    )
    assert sorted(read_table(uri).rows()) == [("it's", 0.9), ("plain", 0.7)]


def test_schema_additions_merge(uri):
    write(uri, layer_frame(0), [0])
    write(uri, layer_frame(1, explanation=["a", "b", "c"]), [1])
    table = rows(uri)
    assert table.filter(pl.col("layer") == 0).get_column("explanation").null_count() == 3
    assert table.filter(pl.col("layer") == 1).get_column("explanation").to_list() == ["a", "b", "c"]


def test_an_unpartitioned_write_replaces_the_whole_table(uri):
    unpartitioned = {"partition_column": None, "partitions": None, "commit_metadata": {}}
    write_partitions(uri, pl.DataFrame({"a": [1, 2]}), **unpartitioned)
    assert write_partitions(uri, pl.DataFrame({"b": ["x"]}), **unpartitioned) == 1
    assert read_table(uri).to_dict(as_series=False) == {"b": ["x"]}


def test_commit_metadata_is_in_the_history(uri):
    write(uri, layer_frame(0), [0], dagster_run_id="run-1")
    write(uri, layer_frame(1), [1], dagster_run_id="run-2")
    history = commit_history(uri)
    assert [(c["version"], c["dagster_run_id"]) for c in history] == [(1, "run-2"), (0, "run-1")]
    assert len(commit_history(uri, limit=1)) == 1


def row_groups(folder: Path) -> list[int]:
    import pyarrow.parquet as pq

    [file] = folder.glob("*.parquet")
    metadata = pq.ParquetFile(file).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def test_row_groups_hold_as_many_rows_as_asked(uri):
    # Heavy rows (neuron_records) ask for small groups, so a read of one neuron decodes little.
    write(uri, layer_frame(0, rows=100), [0])
    write_partitions(
        uri,
        layer_frame(1, rows=100),
        partition_column="layer",
        partitions=[1],
        commit_metadata={},
        row_group_rows=32,
    )
    assert row_groups(Path(uri) / "layer=0") == [100]
    assert row_groups(Path(uri) / "layer=1") == [32, 32, 32, 4]
    one = read_table(uri, partition_column="layer", partitions=[1], where=pl.col("neuron") == 70)
    assert one["neuron"].to_list() == [70]


def test_time_travel_reads_an_earlier_version(uri):
    write(uri, layer_frame(0, rows=3), [0])
    write(uri, layer_frame(0, rows=1), [0])
    assert rows(uri).height == 1
    assert rows(uri, version=0).height == 3
    assert read_table(uri, version=0, columns=["neuron"]).columns == ["neuron"]
    with pytest.raises(InputError, match="versions 0 to 1, not 5"):
        read_table(uri, version=5)


def test_a_read_of_one_partition_opens_no_other_partition(uri):
    write(uri, pl.concat([layer_frame(0), layer_frame(1)]), [0, 1])
    for path in (Path(uri) / "layer=1").glob("*.parquet"):
        path.unlink()  # a read that opened layer 1 would fail now
    assert rows(uri, partition_column="layer", partitions=[0]).height == 3
    with pytest.raises(InputError, match="corrupt"):
        read_table(uri)


def test_a_missing_table_says_it_has_not_been_materialized(uri):
    with pytest.raises(InputError, match=f"{uri} has not been materialized yet"):
        read_table(uri)
    assert table_version(uri) is None


def test_a_broken_log_is_reported_as_corrupt(uri):
    write(uri, layer_frame(0), [0])
    write(uri, layer_frame(1), [1])
    (Path(uri) / "_delta_log" / "00000000000000000001.json").write_text("{not json")
    for action in (read_table, table_version, lambda u: write(u, layer_frame(2), [2])):
        with pytest.raises(InputError, match=f"{uri} is corrupt"):
            action(uri)


def test_concurrent_writers_of_different_partitions_both_land(uri):
    write(uri, layer_frame(9), [9])
    errors: list[BaseException] = []

    def write_layer(layer: int) -> None:
        try:
            write(uri, layer_frame(layer), [layer])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write_layer, args=(layer,)) for layer in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert table_version(uri) == 2
    assert rows(uri).get_column("layer").unique().sort().to_list() == [0, 1, 9]


# Run in a subprocess: the real writer, fed a stream that stalls after its last batch, so its data
# files are on disk and its commit never comes until the process is killed.
STALLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import polars as pl, pyarrow as pa
    from autointerp.storage import delta

    uri, marker = sys.argv[1:]
    real_write = delta.write_deltalake

    def stalling_write(table, data, **kwargs):
        def batches():
            yield from data.to_batches(max_chunksize=20_000)
            open(marker, "w").close()
            time.sleep(600)

        stream = pa.RecordBatchReader.from_batches(data.schema, batches())
        # Small files: they reach the disk as they would in a write of many gigabytes.
        return real_write(table, stream, target_file_size=200_000, **kwargs)

    delta.write_deltalake = stalling_write
    frame = pl.DataFrame({"layer": [0] * 200_000, "neuron": range(200_000)})
    delta.write_partitions(uri, frame, partition_column="layer", partitions=[0], commit_metadata={})
    """
)


def wait_for(condition, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120  # only a guard against hanging
    while not condition():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the writer never got to its commit"
        time.sleep(0.05)


def test_a_write_killed_before_its_commit_leaves_the_table_as_it_was(uri, tmp_path):
    write(uri, pl.concat([layer_frame(0), layer_frame(1)]), [0, 1])
    before = rows(uri)
    folder = Path(uri) / "layer=0"
    committed = set(folder.glob("*.parquet"))
    marker = tmp_path / "stalled"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", STALLED_WRITER, uri, str(marker)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: marker.exists() and len(set(folder.glob("*.parquet")) - committed), process
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert len(set(folder.glob("*.parquet")) - committed) > 0  # data files written, uncommitted
    assert table_version(uri) == 0
    assert rows(uri).equals(before)
    assert write(uri, layer_frame(0, rows=4), [0]) == 1
    assert rows(uri).get_column("layer").value_counts().sort("layer").rows() == [(0, 4), (1, 3)]
    assert len(DeltaTable(uri).file_uris()) == 2  # the orphans stay out of the table


def profile_rows(layer: int, explainer: str, n: int = 2) -> pl.DataFrame:
    return pl.DataFrame(
        {"layer": [layer] * n, "neuron": list(range(n)), "explainer": [explainer] * n}
    )


def test_replace_within_keeps_other_profiles_rows(uri):
    def write_as(frame: pl.DataFrame, explainer: str) -> int:
        return write_partitions(
            uri,
            frame,
            partition_column="layer",
            partitions=sorted(set(frame["layer"])),
            commit_metadata={},
            replace_within={"explainer": [explainer]},
        )

    write_as(pl.concat([profile_rows(0, "a"), profile_rows(1, "a")]), "a")
    write_as(profile_rows(0, "b", n=3), "b")
    assert read_table(uri).group_by("layer", "explainer").len().sort(
        "layer", "explainer"
    ).rows() == [
        (0, "a", 2),
        (0, "b", 3),
        (1, "a", 2),
    ]
    write_as(profile_rows(0, "b", n=1), "b")  # B again: only B's rows of layer 0 change
    assert read_table(uri).filter(layer=0).group_by("explainer").len().sort("explainer").rows() == [
        ("a", 2),
        ("b", 1),
    ]
    with pytest.raises(InputError, match="explainer"):  # a frame may not carry another's rows
        write_as(profile_rows(0, "a"), "b")


def test_replace_within_a_column_the_table_does_not_have_yet_replaces_the_partition(uri):
    write(uri, pl.DataFrame({"layer": [0, 0, 1], "neuron": [0, 1, 0]}), [0, 1])
    write_partitions(
        uri,
        profile_rows(0, "a", n=1),
        partition_column="layer",
        partitions=[0],
        commit_metadata={},
        replace_within={"explainer": ["a"]},
    )
    assert rows(uri).select("layer", "neuron", "explainer").rows() == [(0, 0, "a"), (1, 0, None)]


def test_each_commit_records_what_it_replaced(tmp_path):
    uri = str(tmp_path / "t")
    frame = pl.DataFrame({"layer": [0, 1], "explainer": ["a", "o'b"], "x": [1, 2]})
    for _ in range(2):  # the first write creates the table: it replaced its layers whole
        write_partitions(
            uri,
            frame,
            partition_column="layer",
            partitions=["0", "1"],
            replace_within={"explainer": ["a", "o'b"]},
            commit_metadata={"dagster_run_id": "r"},
        )
    write_partitions(uri, frame, partition_column=None, partitions=None, commit_metadata={})
    newest, second, first = (c for c in commit_history(uri) if c["operation"] != "CREATE TABLE")
    assert replaced_rows(first) == {"layer": ["0", "1"]}
    assert replaced_rows(second) == {"layer": ["0", "1"], "explainer": ["a", "o'b"]}
    assert replaced_rows(newest) == {}  # the whole table
    assert replaced_rows({"operation": "WRITE"}) is None  # a commit that recorded nothing


def test_a_writer_that_loses_the_race_rereads_and_reapplies(tmp_path, monkeypatch):
    """Two writers opened on the same table version replace the same layer: the second commit
    conflicts, re-reads the table and applies its write on top of the first one's."""
    from autointerp.storage import delta

    uri = str(tmp_path / "t")
    frame = pl.DataFrame({"layer": [0, 1], "x": [0, 0]})
    write_partitions(
        uri, frame, partition_column="layer", partitions=["0", "1"], commit_metadata={}
    )
    stale = delta._open(uri, None)  # opened before the other writer commits
    layer0 = frame.head(1)
    write_partitions(
        uri,
        layer0.with_columns(x=pl.lit(10)),
        partition_column="layer",
        partitions=["0"],
        commit_metadata={},
    )
    opened, conflicts = iter([stale]), []
    fresh, conflict = delta._open_for_write, delta._conflict
    monkeypatch.setattr(delta, "_open_for_write", lambda u, o: next(opened, None) or fresh(u, o))
    monkeypatch.setattr(delta, "_conflict", lambda e: conflicts.append(e) or conflict(e))
    write_partitions(
        uri,
        layer0.with_columns(x=pl.lit(20)),
        partition_column="layer",
        partitions=["0"],
        commit_metadata={},
    )
    assert len(conflicts) == 1  # the race was lost once, then won
    assert read_table(uri).sort("layer")["x"].to_list() == [20, 0]
