"""The IO manager that stores every asset as a Delta table (see autointerp.storage.delta).

Each asset is the table `root_uri/<asset key path>`. A partitioned asset names its partition
column in its definition metadata (`partition_column`, default "layer"); each of the step's
partitions is written in a commit of its own that replaces exactly it, so a single-run backfill
over several layers never deletes another layer. One commit per layer keeps the write's memory to
one layer's (delta-rs buffers a multi-partition write at about 2.5 times its frame); a step that
dies between its commits leaves each layer either whole and new or as it was, and records no
materialization, so its rerun writes them all again. Each layer's materialization names its own
commit (`delta_version`). An input reads only the partitions the step needs; an unpartitioned
downstream of a partitioned asset reads all of them.

Concurrent runs: a partition write that loses a commit race is re-applied on the table as it is
then (`delta.write_partitions`). An unpartitioned view (score_summary, compare) is computed from
whole tables, so re-applying its frame is not enough: when an input it read has a newer version
before or right after its commit, the step is run again (Dagster's RetryRequested), reading the
inputs anew. The last view written is therefore computed from the inputs as they ended.

A keyed asset (definition metadata `key_column`, e.g. the corpus's `corpus_id`) holds one table
partition per key, side by side: a write adds its key (and is a no-op when the key is there
already: the key is a content hash), never touching another. Its readers read one key: the one
this run materialized, else the one its latest materialization named.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from autointerp.storage import delta

DEFAULT_PARTITION_COLUMN = "layer"

# The Delta version each input was read at, by (run id, asset key): an asset records it in its
# rows for lineage. A step loads its inputs in the process that computes it, whatever executor.
_versions_read: dict[tuple[str, dg.AssetKey], int | None] = {}


# The Delta version each output was written as, by (run id, asset key): a multi-asset writes its
# audit table first, and its main table's rows name the audit's version.
_versions_written: dict[tuple[str, dg.AssetKey], int] = {}


def version_read(context: dg.AssetExecutionContext, asset_key: dg.AssetKey) -> int | None:
    """The Delta version at which this run's step read the input `asset_key`."""
    return _versions_read.get((context.run.run_id, asset_key))


def version_written(context: dg.AssetExecutionContext, asset_key: dg.AssetKey) -> int | None:
    """The Delta version this run's step wrote `asset_key` as (an output it already yielded)."""
    return _versions_written.get((context.run.run_id, asset_key))


class DeltaIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames as Delta tables under `root_uri` (a folder, s3://, gs://, az://)."""

    root_uri: str
    storage_options: dict[str, str] = Field(default_factory=dict)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        uri = self.table_uri(context.asset_key)
        column: str | None = None
        partitions: Sequence[str] | None = None
        if context.has_asset_partitions:
            column = partition_column(context.definition_metadata)
            partitions = sorted(context.asset_partition_keys, key=_layer_order)
        elif key := _metadata(context.definition_metadata, "key_column"):
            column, partitions = key, sorted(str(v) for v in obj[key].unique())
            held = delta.partition_values(uri, key, self.storage_options)
            if set(partitions) <= held:  # content-addressed: the same key is the same rows
                context.add_output_metadata(
                    {
                        "delta_version": delta.table_version(uri, self.storage_options),
                        "written": False,
                        key: ",".join(partitions),
                        **_table_metadata(obj, uri),
                    }
                )
                return
        # A view over whole tables (a summary) is only as new as the inputs it read: when another
        # run committed to one of them since, the step runs again on what is there now.
        view = column is None
        if view:
            self._retry_if_inputs_moved(context)
        code_version = context.asset_spec.code_version
        options = {
            "replace_within": _replace_within(context.definition_metadata),
            "row_group_rows": _row_group_rows(context.definition_metadata),
            "commit_metadata": {
                "dagster_run_id": context.run_id,
                "dagster_asset_key": context.asset_key.to_user_string(),
                **({"dagster_code_version": code_version} if code_version else {}),
            },
            "storage_options": self.storage_options,
        }
        if context.has_asset_partitions:  # a commit per layer, each named by its layer
            versions = delta.write_each_partition(
                uri, obj, partition_column=column, partitions=partitions, **options
            )
            for partition, written in zip(partitions, versions, strict=True):
                context.step_context.add_asset_metadata(
                    {"delta_version": written}, context.asset_key, partition
                )
            version = versions[-1]
        else:
            version = delta.write_partitions(
                uri, obj, partition_column=column, partitions=partitions, **options
            )
        if view:  # moved while this write committed: the next attempt writes a newer view
            self._retry_if_inputs_moved(context)
        _versions_written[(context.run_id, context.asset_key)] = version
        # What every layer of this write shares; each layer's own row count and statistics
        # come from the asset (assets/common.py `table_output`), per partition.
        context.add_output_metadata(
            {
                "delta_version": version,  # the last commit; each layer names its own
                "dagster/row_count": obj.height,
                **_table_metadata(obj, uri),
                # A keyed table: the key written, which its readers read.
                **(
                    {column: ",".join(partitions)}
                    if column and partitions and not context.has_asset_partitions
                    else {}
                ),
            }
        )

    def _retry_if_inputs_moved(self, context: dg.OutputContext) -> None:
        """Ask Dagster to run the step again (re-reading its inputs) when an input table has
        a newer version than the one the step read."""
        moved = []
        for dep in context.asset_spec.deps:
            read = _versions_read.get((context.run_id, dep.asset_key))
            uri = self.table_uri(dep.asset_key)
            if read is not None and delta.table_version(uri, self.storage_options) != read:
                moved.append(dep.asset_key.to_user_string())
        if moved:
            context.log.info(f"{', '.join(moved)} changed since read; computing again")
            raise dg.RetryRequested(
                max_retries=delta.COMMIT_ATTEMPTS, seconds_to_wait=random.uniform(0.05, 0.5)
            )

    def _key_read(self, context: dg.InputContext) -> tuple[str | None, list[str] | None]:
        """(key column, [key]) for an input from a keyed asset: the key this run materialized,
        else the latest materialization's; (None, None) for any other input."""
        upstream = context.upstream_output
        key = _metadata(upstream.definition_metadata if upstream else {}, "key_column")
        if key is None:
            return None, None
        instance = context.step_context.instance
        own = [
            record.event_log_entry.asset_materialization
            for record in instance.get_records_for_run(
                context.step_context.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            if record.event_log_entry.dagster_event.asset_key == context.asset_key
        ]
        event = instance.get_latest_materialization_event(context.asset_key)
        chosen = own[-1] if own else (event.asset_materialization if event else None)
        value = chosen.metadata.get(key) if chosen is not None else None
        if value is None:  # written before the table was keyed: every row
            return None, None
        return key, [str(value.value)]

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        uri = self.table_uri(context.asset_key)
        column: str | None = None
        partitions: Sequence[str] | None = None
        if context.has_asset_partitions:
            upstream = context.upstream_output
            column = partition_column(upstream.definition_metadata if upstream else {})
            partitions = context.asset_partition_keys
        else:
            column, partitions = self._key_read(context)
        # Pin the version first, so the version recorded is the one read.
        version = delta.table_version(uri, self.storage_options)
        _versions_read[(context.step_context.run_id, context.asset_key)] = version
        frame = delta.read_table(
            uri,
            partition_column=column,
            partitions=partitions,
            version=version,
            columns=(context.definition_metadata or {}).get("columns"),  # AssetIn metadata
            storage_options=self.storage_options,
        )
        # add_input_metadata also files an asset observation for the input's one partition, and
        # fails (dagster 1.13) when the input spans several; then the version goes to the log.
        if partitions is None or len(partitions) == 1:
            context.add_input_metadata({"delta_version": version, "table_uri": uri})
        else:
            context.log.info(f"read {len(partitions)} partitions of {uri} at version {version}")
        return frame

    def table_uri(self, asset_key: dg.AssetKey) -> str:
        return self.root_uri.rstrip("/") + "/" + "/".join(asset_key.path)


def partition_column(metadata: Mapping[str, Any]) -> str:
    """The partition column an asset's definition metadata names (default "layer")."""
    return _metadata(metadata, "partition_column") or DEFAULT_PARTITION_COLUMN


def _metadata(metadata: Mapping[str, Any], name: str) -> str | None:
    value = metadata.get(name)
    # Definition metadata may arrive raw or wrapped in a MetadataValue.
    value = getattr(value, "value", value)
    return None if value is None else str(value)


def _row_group_rows(metadata: Mapping[str, Any]) -> int:
    """Definition metadata `row_group_rows`: rows per Parquet row group (a table whose rows are
    heavy asks for fewer, so a read of one neuron decodes little)."""
    value = metadata.get("row_group_rows", delta.ROW_GROUP_ROWS)
    return int(getattr(value, "value", value))


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    """The table's columns and their types, as the UI lists them (`dagster/column_schema`)."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )


def _table_metadata(frame: pl.DataFrame, uri: str) -> dict[str, Any]:
    """What the UI shows of every table: its columns and where it is (a local table as a path
    the UI offers to copy, one in an object store as its URL)."""
    location = dg.MetadataValue.url(uri) if "://" in uri else dg.MetadataValue.path(uri)
    return {
        "dagster/column_schema": column_schema(frame),
        "dagster/uri": uri,
        "table_uri": location,
    }


def _replace_within(metadata: Mapping[str, Any]) -> dict[str, list[str]] | None:
    """Definition metadata `replace_within` ({column: [values]}): rows a write replaces inside
    its partitions, so results of several explainer profiles live side by side."""
    value = metadata.get("replace_within")
    value = getattr(value, "value", value)
    return {str(k): [str(v) for v in values] for k, values in value.items()} if value else None


def _layer_order(key: str) -> tuple[bool, int, str]:
    """Dagster hands a step's keys in no fixed order; layers read better counted up."""
    return (not key.isdigit(), int(key) if key.isdigit() else 0, key)
