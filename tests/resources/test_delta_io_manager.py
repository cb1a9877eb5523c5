"""DeltaIOManager through dagster.materialize: the ready-made IO manager's data-loss cases
(DESIGN.md, "Storage: Delta tables") reproduced with it and with the project's own storage."""

import hashlib
import warnings
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster_deltalake import LocalConfig
from dagster_deltalake_polars import DeltaLakePolarsIOManager

from autointerp.errors import InputError
from autointerp.storage.delta import (
    commit_history,
    read_table,
    replaced_rows,
    table_version,
    write_partitions,
)
from resources.delta_io import DeltaIOManager

LAYERS = dg.StaticPartitionsDefinition(["0", "1", "2"])
# Tags of a single-run backfill over a range of partitions: one run, one step, several keys.
BACKFILL_0_TO_1 = {
    "dagster/asset_partition_range_start": "0",
    "dagster/asset_partition_range_end": "1",
}
BACKFILL_ALL = {**BACKFILL_0_TO_1, "dagster/asset_partition_range_end": "2"}


def layer_rows(key: str, integer: bool) -> pl.DataFrame:
    """Layer n has n + 2 rows, so every layer's rows can be counted apart."""
    count = int(key) + 2
    layer = int(key) if integer else key
    return pl.DataFrame({"layer": [layer] * count, "neuron": list(range(count))})


def graph(metadata: dict[str, str], integer: bool = True) -> list[dg.AssetsDefinition]:
    """records[layer] (one step for a whole range), a per-layer and an unpartitioned downstream."""

    def records(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.concat([layer_rows(key, integer) for key in context.partition_keys])

    with warnings.catch_warnings(action="ignore", category=dg.BetaWarning):  # backfill_policy
        records = dg.asset(
            partitions_def=LAYERS,
            metadata=metadata,
            code_version="records-v1",
            backfill_policy=dg.BackfillPolicy.single_run(),
        )(records)

    @dg.asset(partitions_def=LAYERS, ins={"records": dg.AssetIn(metadata={"columns": ["layer"]})})
    def layer_summary(records: pl.DataFrame) -> pl.DataFrame:
        return (
            records.group_by("layer").len().with_columns(columns=pl.lit(",".join(records.columns)))
        )

    @dg.asset
    def summary(records: pl.DataFrame) -> pl.DataFrame:
        return records.group_by("layer").len().sort("layer")

    return [records, layer_summary, summary]


OWN = graph({"partition_column": "layer"})


def run(
    io_manager: dg.ConfigurableIOManager | dg.ConfigurableIOManagerFactory,
    select: str,
    partition: str | None = None,
    assets: list[dg.AssetsDefinition] = OWN,
    **kwargs,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        selection=[select],
        partition_key=partition,
        resources={"io_manager": io_manager},
        **kwargs,
    )


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}


def layer_counts(uri: Path | str) -> list[tuple]:
    return read_table(str(uri)).get_column("layer").value_counts().sort("layer").rows()


@pytest.fixture
def own(tmp_path: Path) -> DeltaIOManager:
    return DeltaIOManager(root_uri=str(tmp_path))


@pytest.fixture
def ready_made(tmp_path: Path) -> DeltaLakePolarsIOManager:
    return DeltaLakePolarsIOManager(root_uri=str(tmp_path), storage_options=LocalConfig())


# (a) An integer partition column.


def test_writing_integer_layer_1_leaves_layer_0_byte_identical(own, tmp_path):
    run(own, "records", "0")
    layer_0 = tmp_path / "records" / "layer=0"
    before = file_hashes(layer_0)
    run(own, "records", "1")
    assert before and file_hashes(layer_0) == before
    assert layer_counts(tmp_path / "records") == [(0, 2), (1, 3)]


def test_ready_made_io_manager_loses_layer_0_when_writing_integer_layer_1(ready_made, tmp_path):
    # Reproduces DESIGN.md's first case (dagster #34064): its predicate builder rejects an integer
    # column, the error is swallowed, and the write overwrites the whole table. Asserts the loss;
    # a fixed upstream release fails this test, and then the project could reconsider it.
    assets = graph({"partition_expr": "layer"})
    run(ready_made, "records", "0", assets)
    result = run(ready_made, "records", "1", assets)
    assert layer_counts(tmp_path / "public" / "records") == [(1, 3)]  # layer 0 is gone
    # DESIGN.md's fourth fact: with deltalake 1.6 it reports no row count or size either.
    (materialization,) = result.asset_materializations_for_node("records")
    assert not {"num_rows", "size_bytes"} & set(materialization.metadata)


# (b) A single-run backfill hands one step several partitions.


def test_single_run_backfill_commits_each_layer_and_keeps_the_others(own, tmp_path):
    run(own, "records", "2")
    layer_2 = file_hashes(tmp_path / "records" / "layer=2")
    result = run(own, "records", tags=BACKFILL_0_TO_1)
    uri = str(tmp_path / "records")
    assert table_version(uri) == 2  # one commit per layer, in layer order
    replaced = [replaced_rows(commit) for commit in commit_history(uri)[:2]]
    assert replaced == [{"layer": ["1"]}, {"layer": ["0"]}]  # newest first
    assert file_hashes(tmp_path / "records" / "layer=2") == layer_2
    assert layer_counts(uri) == [(0, 2), (1, 3), (2, 4)]
    materializations = result.asset_materializations_for_node("records")
    # Each layer's materialization names the commit that wrote it.
    assert {m.partition: m.metadata["delta_version"].value for m in materializations} == {
        "0": 1,
        "1": 2,
    }


def test_ready_made_io_manager_deletes_another_layer_in_a_single_run_backfill(ready_made, tmp_path):
    # Reproduces DESIGN.md's second case, with string layers so that case (a) is not the cause:
    # "Array partition values are not yet supported" is raised inside the predicate builder and
    # swallowed, so the write of layers 0 and 1 overwrites the whole table and deletes layer 2.
    assets = graph({"partition_expr": "layer"}, integer=False)
    run(ready_made, "records", "2", assets)
    run(ready_made, "records", assets=assets, tags=BACKFILL_0_TO_1)
    assert layer_counts(tmp_path / "public" / "records") == [("0", 2), ("1", 3)]  # layer 2 gone


# (c) An unpartitioned downstream of a partitioned asset.


def test_unpartitioned_downstream_reads_every_layer(own, tmp_path):
    run(own, "records", tags=BACKFILL_ALL)
    run(own, "summary")
    assert read_table(str(tmp_path / "summary")).rows() == [(0, 2), (1, 3), (2, 4)]


def test_ready_made_io_manager_cannot_load_all_layers_for_an_unpartitioned_downstream(
    ready_made,
):
    # Reproduces DESIGN.md's third case: loading several partitions is not supported at all.
    assets = graph({"partition_expr": "layer"}, integer=False)
    run(ready_made, "records", assets=assets, tags=BACKFILL_0_TO_1)
    with pytest.raises(ValueError, match="Array partition values are not yet supported"):
        run(ready_made, "summary", assets=assets)


def test_partitioned_downstream_reads_only_its_layer_and_records_the_version(own, tmp_path):
    run(own, "records", tags=BACKFILL_0_TO_1)
    result = run(own, "layer_summary", "1")
    # Only layer 1's rows, and only the columns the input asked for.
    assert read_table(str(tmp_path / "layer_summary")).rows() == [(1, 3, "layer")]
    loaded = [
        event.event_specific_data.metadata
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.LOADED_INPUT
    ]
    assert loaded[0]["delta_version"].value == 1  # the backfill committed layers 0, 1


# Lineage recorded with every write.


def test_commit_and_materialization_metadata(own, tmp_path):
    result = run(own, "records", "1")
    commit = commit_history(str(tmp_path / "records"), limit=1)[0]
    assert commit["dagster_run_id"] == result.run_id
    assert commit["dagster_asset_key"] == "records"
    assert commit["dagster_code_version"] == "records-v1"
    (materialization,) = result.asset_materializations_for_node("records")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["delta_version"] == 0
    assert metadata["dagster/row_count"] == 3
    # What the UI shows of a table: its columns, and where it is (a local path to copy).
    assert [c.name for c in metadata["dagster/column_schema"].columns][:1] == ["layer"]
    assert metadata["dagster/uri"] == metadata["table_uri"] == str(tmp_path / "records")
    assert isinstance(materialization.metadata["table_uri"], dg.PathMetadataValue)


def test_definition_metadata_sets_the_rows_per_row_group(tmp_path):
    import pyarrow.parquet as pq

    manager = DeltaIOManager(root_uri=str(tmp_path))
    run(manager, "records", "1", graph({"partition_column": "layer", "row_group_rows": 2}))
    [file] = (tmp_path / "records" / "layer=1").glob("*.parquet")
    metadata = pq.ParquetFile(file).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [2, 1]


# Failures leave the table as it was.


def failing_records(crash: bool) -> dg.AssetsDefinition:
    """An asset `records` that crashes midway, or returns rows of a layer it was not asked for."""

    @dg.asset(name="records", partitions_def=LAYERS, metadata={"partition_column": "layer"})
    def records() -> pl.DataFrame:
        if crash:
            raise RuntimeError("crashed midway")
        return layer_rows("0", integer=True)  # a bug: layer 0's rows from layer 1's step

    return records


@pytest.mark.parametrize(
    ("crash", "error", "match"),
    [(True, RuntimeError, "crashed midway"), (False, InputError, r"rows of layer \[0\]")],
)
def test_a_failed_step_leaves_the_table_at_its_previous_version(own, tmp_path, crash, error, match):
    run(own, "records", tags=BACKFILL_0_TO_1)
    uri = str(tmp_path / "records")
    before, version = read_table(uri), table_version(uri)
    with pytest.raises(error, match=match):
        run(own, "records", "1", assets=[failing_records(crash)])
    assert table_version(uri) == version
    assert read_table(uri).equals(before)


def test_reading_an_asset_never_materialized_says_so(own, tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path / 'records'} has not been materialized yet"):
        run(own, "summary")


def test_a_summary_whose_input_moved_meanwhile_is_computed_again(own, tmp_path):
    """Another run writes layer 2 between this step's read of records and its commit: the step
    runs again on the records as they are now, so the summary counts layer 2 too."""
    run(own, "records", "0")
    computed: list[int] = []

    @dg.asset
    def summary(records: pl.DataFrame) -> pl.DataFrame:
        computed.append(records["layer"].n_unique())
        if len(computed) == 1:  # the other run's commit lands now
            write_partitions(
                str(tmp_path / "records"),
                layer_rows("2", True),
                partition_column="layer",
                partitions=["2"],
                commit_metadata={},
            )
        return records.group_by("layer").len().sort("layer")

    result = run(own, "summary", assets=[OWN[0], summary])

    assert result.success and computed == [1, 2]
    assert read_table(str(tmp_path / "summary"))["layer"].to_list() == [0, 2]
