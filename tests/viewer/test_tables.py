"""The viewer's reads: one partition and the columns asked for, cached per table version, a write
seen at the next refresh, older files read with a newer column as nulls, a missing table named."""

from __future__ import annotations

import polars as pl
import pytest

from autointerp.storage.delta import write_partitions
from autointerp.viewer.tables import MissingTableError, ModelTables


def write(root, table: str, frame: pl.DataFrame, layers: list[int]) -> int:
    return write_partitions(
        f"{root}/{table}",
        frame,
        partition_column="layer",
        partitions=layers,
        commit_metadata={"dagster_run_id": "run"},
    )


def layer_frame(layer: int, neurons: int = 40, **extra) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "layer": pl.Series([layer] * neurons, dtype=pl.Int32),
            "neuron": pl.Series(range(neurons), dtype=pl.Int32),
            "value": [float(layer * 1000 + n) for n in range(neurons)],
            **extra,
        }
    )


def test_reads_one_layer_and_its_columns_cached_until_the_table_changes(tmp_path):
    write(tmp_path, "t", pl.concat([layer_frame(0), layer_frame(1)]), [0, 1])
    tables = ModelTables(str(tmp_path), refresh_s=0)
    first = tables.frame("t", ["neuron", "value"], layer=1)
    assert first.columns == ["neuron", "value"] and first["value"].min() == 1000.0
    assert tables.frame("t", ["neuron", "value"], layer=1) is first  # cached at this version
    assert tables.snapshot("t").partitions == [0, 1]

    write(tmp_path, "t", layer_frame(1).with_columns(value=pl.col("value") * -1), [1])
    again = tables.frame("t", ["neuron", "value"], layer=1)
    assert again is not first and again["value"].max() == -1000.0
    # The other layer's rows are untouched by the write and still read.
    assert tables.frame("t", ["value"], layer=0)["value"].min() == 0.0
    assert tables.version("t") == 1


def test_a_write_shows_only_after_the_refresh_interval(tmp_path):
    write(tmp_path, "t", layer_frame(0), [0])
    tables = ModelTables(str(tmp_path), refresh_s=3600)
    assert tables.frame("t", ["value"], layer=0)["value"].max() == 39.0
    write(tmp_path, "t", layer_frame(0, neurons=50), [0])
    assert tables.frame("t", ["value"], layer=0).height == 40  # within the interval
    assert ModelTables(str(tmp_path)).frame("t", ["value"], layer=0).height == 50


def test_one_neuron_is_read_by_itself_or_sliced_from_a_whole_layer(tmp_path):
    write(tmp_path, "t", pl.concat([layer_frame(0), layer_frame(1)]), [0, 1])
    pushed = ModelTables(str(tmp_path)).rows("t", ["value"], 1, 7)
    sliced = ModelTables(str(tmp_path), whole_layers=True).rows("t", ["value"], 1, 7)
    assert pushed.equals(sliced) and pushed.to_dicts() == [{"neuron": 7, "value": 1007.0}]
    everything = ModelTables(str(tmp_path)).frame("t", ["layer", "neuron"])
    assert everything.height == 80 and sorted(everything["layer"].unique()) == [0, 1]


def test_a_column_newer_files_have_reads_as_null_in_older_ones(tmp_path):
    write(tmp_path, "t", layer_frame(0), [0])
    write(tmp_path, "t", layer_frame(1, method=["chat_logprobs"] * 40), [1])
    tables = ModelTables(str(tmp_path))
    assert tables.frame("t", ["method"], layer=0)["method"].null_count() == 40
    assert set(tables.frame("t", ["method"], layer=1)["method"]) == {"chat_logprobs"}
    # A column no file has yet reads as nulls too, so pages can ask for what newer writers add.
    assert tables.frame("t", ["neuron", "truncated"], layer=0)["truncated"].null_count() == 40


def test_a_missing_table_is_named(tmp_path):
    tables = ModelTables(str(tmp_path), refresh_s=0)
    assert not tables.exists("scores") and tables.version("scores") is None
    assert tables.history("scores") == []
    with pytest.raises(MissingTableError, match="scores has not been materialized") as error:
        tables.frame("scores", ["neuron"])
    assert error.value.table == "scores"
    write(tmp_path, "scores", layer_frame(0), [0])
    assert tables.exists("scores")  # appears without a restart
    assert tables.history("scores")[0]["dagster_run_id"] == "run"
