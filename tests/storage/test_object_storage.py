"""Tables on object storage (a local S3 server, moto's server mode, on loopback) and writers
that race: two writers opened on the same table version both land."""

import threading
from collections import Counter

import polars as pl
import pytest

from autointerp.storage import delta
from autointerp.storage.delta import partition_values, read_table, table_version, write_partitions


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path) -> tuple[str, dict[str, str]]:
    """(table URI, storage options) on a local folder and on the S3 server."""
    if request.param == "local":
        return str(tmp_path / "t"), {}
    s3 = request.getfixturevalue("s3_root")
    return f"{s3.uri}/t", s3.storage_options


def frame(layer: int, explainer: str = "a", value: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {"layer": [layer] * 3, "neuron": [0, 1, 2], "explainer": explainer, "value": value}
    )


def write(where, data: pl.DataFrame, layer: int, **kwargs) -> int:
    uri, options = where
    return write_partitions(
        uri,
        data,
        partition_column="layer",
        partitions=[layer],
        commit_metadata={"writer": str(layer)},
        storage_options=options,
        **kwargs,
    )


def race(monkeypatch, *writes) -> Counter:
    """Run `writes` in threads, each first opening the table at the same version as the others
    before any of them commits; how many times each opened it (a second open: a retry)."""
    barrier = threading.Barrier(len(writes))
    opens: Counter = Counter()
    real_open = delta._open_for_write

    def open_together(uri, options):
        table = real_open(uri, options)
        me = threading.current_thread().name
        opens[me] += 1
        if opens[me] == 1:
            barrier.wait(timeout=60)
        return table

    monkeypatch.setattr(delta, "_open_for_write", open_together)
    errors: list[BaseException] = []

    def run(work):
        try:
            work()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,), name=f"w{i}") for i, w in enumerate(writes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return opens


def test_two_writers_of_different_layers_at_once(where, monkeypatch):
    race(monkeypatch, lambda: write(where, frame(0), 0), lambda: write(where, frame(1), 1))
    uri, options = where
    assert partition_values(uri, "layer", options) == {"0", "1"}
    assert read_table(uri, storage_options=options).height == 6
    race(
        monkeypatch,
        lambda: write(where, frame(0, value=2), 0),
        lambda: write(where, frame(1, value=3), 1),
    )
    assert (
        read_table(uri, storage_options=options).sort("layer")["value"].to_list()
        == [2] * 3 + [3] * 3
    )


def test_same_layer_writers_opened_on_one_version_reread_and_reapply(where, monkeypatch):
    """Two explainers' rows of one layer, written at once: the loser of the commit re-reads the
    table and applies its write on top of the winner's, so both explainers' rows are there."""
    write(where, frame(0, "a", 0).vstack(frame(0, "b", 0)), 0)
    opens = race(
        monkeypatch,
        lambda: write(where, frame(0, "a", 1), 0, replace_within={"explainer": ["a"]}),
        lambda: write(where, frame(0, "b", 2), 0, replace_within={"explainer": ["b"]}),
    )
    assert sorted(opens.values()) == [1, 2]  # one writer lost the race once and retried
    uri, options = where
    rows = read_table(uri, storage_options=options)
    assert dict(rows.group_by("explainer").agg(pl.col("value").max()).iter_rows()) == {
        "a": 1,
        "b": 2,
    }
    assert table_version(uri, options) == 2


def test_a_whole_table_rewritten_by_two_writers_keeps_one_whole(where, monkeypatch):
    uri, options = where
    summary = pl.DataFrame({"layer": [0, 1], "mean": [0.0, 0.0]})
    write_partitions(
        uri,
        summary,
        partition_column=None,
        partitions=None,
        commit_metadata={},
        storage_options=options,
    )

    def rewrite(value: float):
        return lambda: write_partitions(
            uri,
            summary.with_columns(mean=pl.lit(value)),
            partition_column=None,
            partitions=None,
            commit_metadata={},
            storage_options=options,
        )

    race(monkeypatch, rewrite(1.0), rewrite(2.0))
    means = read_table(uri, storage_options=options)["mean"].to_list()
    assert means in ([1.0, 1.0], [2.0, 2.0])  # one writer's table, never a mix
    assert table_version(uri, options) == 2


def test_time_travel_on_object_storage(s3_root):
    where = (f"{s3_root.uri}/t", s3_root.storage_options)
    write(where, frame(0, value=1), 0)
    write(where, frame(0, value=2), 0)
    uri, options = where
    assert read_table(uri, version=0, storage_options=options)["value"].to_list() == [1] * 3
    assert read_table(uri, storage_options=options)["value"].to_list() == [2] * 3
