"""What the asset modules share: the active profiles and the code versions they give, the outputs
with content-based data versions and per-layer metadata, the blocking checks, the lineage columns
every stage adds, and running an LLM stage profile by profile."""

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg
import polars as pl

from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.config.settings import Settings
from autointerp.llm import CallResult, Usage, calls_frame
from autointerp.progress import ProgressLog
from autointerp.safe_text import printable
from autointerp.storage.content import Previous, data_version, partition_hashes
from autointerp.storage.hashing import content_hash
from resources.delta_io import column_schema, partition_column, version_read
from resources.llm import LLMClients

# --- profiles and code versions --------------------------------------------------------------


def explainer_profiles(settings: Settings) -> list[ExplainerProfile]:
    return [settings.profiles.explainer(name) for name in settings.profiles.active_explainers]


def simulator_profiles(settings: Settings) -> list[SimulatorProfile]:
    return [settings.profiles.simulator(name) for name in settings.profiles.active_simulators]


def profiles_version(settings: Settings, logic: str) -> str:
    """A code version from the hashes of the active explainers and simulators."""
    hashes = [p.hash for p in explainer_profiles(settings) + simulator_profiles(settings)]
    return f"{logic}-{content_hash(hashes)}"


def summary_version(settings: Settings, logic: str) -> str:
    """A summary's code version: its logic, and the [summaries] settings set away from their
    defaults."""
    changed = settings.summaries.hash_content()
    return f"{logic}-{content_hash(changed)}" if changed else logic


def active_keys(settings: Settings) -> dict[str, list[str]]:
    """The explainer and simulator names whose rows a write of this stage replaces."""
    return {
        "explainer": list(settings.profiles.active_explainers),
        "simulator": list(settings.profiles.active_simulators),
    }


# --- outputs ---------------------------------------------------------------------------------

CONTENT_HASH = "content_hash"
PREVIEW_ROWS = 20

PartitionMetadata = Callable[[pl.DataFrame], Mapping[str, Any]]


def table_output(
    context: dg.AssetExecutionContext,
    frame: pl.DataFrame,
    *,
    output_name: str = "result",
    asset_key: dg.AssetKey | None = None,
    metadata: Mapping[str, Any] | None = None,
    per_partition: PartitionMetadata | None = None,
) -> dg.Output:
    """The output of one table, with a data version from its content (`storage.content`), so a
    rerun that writes the same rows changes nothing downstream; and each layer's own metadata
    (`add_asset_metadata(partition_key=...)`): its row count, content hash, share of error rows
    where the table has an `error` column, and what `per_partition` reports from its rows."""
    key = asset_key or context.assets_def.key
    partitioned = context.assets_def.partitions_def is not None
    column = partition_column(context.assets_def.metadata_by_key[key]) if partitioned else None
    partitions = list(context.partition_keys) if partitioned else []
    hashes = partition_hashes(frame, column, partitions)
    version = data_version(hashes, _previous(context.instance, key, hashes))
    scoped: dict[str, Any] = safe_metadata(metadata or {})
    for partition, digest in hashes.items():
        rows = (
            frame if partition is None else frame.filter(pl.col(column).cast(pl.Utf8) == partition)
        )
        own = {
            "dagster/row_count": rows.height,
            CONTENT_HASH: digest,
            **({"error_share": _error_share(rows)} if "error" in rows.columns else {}),
            **safe_metadata(per_partition(rows) if per_partition else {}),
        }
        if partition is None:
            scoped.update(own)
        else:
            context.add_asset_metadata(own, asset_key=key, partition_key=partition)
    return dg.Output(frame, output_name, metadata=scoped, data_version=dg.DataVersion(version))


def safe_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`metadata` with its text (and lists of text) made printable: corpus and LLM text must not
    reach the UI or a terminal with control or reordering characters."""
    return {name: _safe(value) for name, value in metadata.items()}


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if type(value) in (list, tuple):  # plain ones: Dagster's metadata values are tuples too
        return [_safe(each) for each in value]
    return value


def _error_share(rows: pl.DataFrame) -> float:
    return float(rows["error"].is_not_null().mean()) if rows.height else 0.0


def _previous(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str | None]
) -> dict[str | None, Previous | None]:
    """Each partition's last materialization: the content hash and data version it recorded."""
    found: dict[str | None, Previous | None] = {}
    for partition in partitions:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key, asset_partitions=None if partition is None else [partition]
            ),
            limit=1,
        ).records
        if not records:
            found[partition] = None
            continue
        event = records[0].asset_materialization
        recorded = event.metadata.get(CONTENT_HASH)
        found[partition] = Previous(
            content_hash=recorded.value if recorded is not None else None,
            data_version=(event.tags or {}).get("dagster/data_version"),
        )
    return found


def table_preview(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> dg.MetadataValue:
    """The first `rows` rows as table metadata (lists shown as text): where corpus and LLM text
    may appear in the UI, which renders it as plain cells, never as Markdown."""
    shown = frame.head(rows)
    nested = [c for c, dtype in shown.schema.items() if dtype.is_nested()]
    shown = shown.with_columns(pl.col(c).map_elements(str, return_dtype=pl.Utf8) for c in nested)
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({k: _cell(v) for k, v in row.items()})
            for row in shown.iter_rows(named=True)
        ],
        schema=column_schema(shown),
    )


def _cell(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, int | float | bool):
        return value
    return printable(value if isinstance(value, str) else str(value))


# --- GPU steps -------------------------------------------------------------------------------

# dagster-dask's op tag: the Dask worker resources a step's task needs.
DASK_RESOURCES_TAG = "dagster-dask/resource_requirements"


def gpu_step(settings: Settings) -> dict:
    """Arguments of an asset that runs the subject model, so that at most one runs per GPU.

    Dagster's executors (multiprocess, dagster-k8s, ...) limit a pool by the slots the instance
    gives it. dagster-dask ignores pools (and a run that names one cannot be shipped to a worker
    by dask 2026: its pool record refuses the iteration dask applies to task arguments), so on
    Dask the step asks for one unit of the worker resource `GPU` instead: a worker started with
    `--resources GPU=1` runs one such step at a time."""
    if settings.execution.executor == "dask":
        return {"op_tags": {DASK_RESOURCES_TAG: json.dumps({"GPU": 1})}}
    return {"pool": settings.execution.gpu_pool}


# --- checks ----------------------------------------------------------------------------------


def blocking_check(asset: dg.AssetKey, name: str, description: str) -> dg.AssetCheckSpec:
    """A check that, failing, keeps the steps downstream of its asset from running."""
    return dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)


def validated(asset: dg.AssetKey, checks: Mapping[str, list[str]]) -> list[dg.AssetCheckResult]:
    """The results of blocking checks run on a frame BEFORE it is written (each a list of
    problems from `autointerp.table_checks`). A failing one fails the step there, so the table
    keeps its previous version and nothing downstream runs on the bad rows."""
    failed = {name: problems for name, problems in checks.items() if problems}
    if failed:
        raise dg.Failure(
            description=printable(
                f"blocking asset check failed on {asset.to_user_string()}, which was not written: "
                + "; ".join(f"{name}: {', '.join(problems)}" for name, problems in failed.items()),
                keep_lines=False,
            ),
            metadata={
                name: printable("; ".join(problems), keep_lines=False)
                for name, problems in failed.items()
            },
        )
    return [dg.AssetCheckResult(asset_key=asset, check_name=name, passed=True) for name in checks]


# --- lineage columns -------------------------------------------------------------------------


def upstream_versions(
    context: dg.AssetExecutionContext, prefix: str, top_k_excerpts: pl.DataFrame, *read: str
) -> pl.DataFrame:
    """Per layer: the corpus, and the neuron_records and corpus versions behind the
    top_k_excerpts rows, and the version at which this step read top_k_excerpts and each table in
    `read`."""
    return (
        top_k_excerpts.select("layer", "corpus_id", "neuron_records_version", "corpus_version")
        .unique("layer")
        .with_columns(
            **{
                f"{name}_version": pl.lit(
                    version_read(context, dg.AssetKey([prefix, name])), dtype=pl.Int64
                )
                for name in ("top_k_excerpts", *read)
            }
        )
    )


# --- LLM stages ------------------------------------------------------------------------------

Work = Callable[..., tuple[pl.DataFrame, list[CallResult]]]


def run_profiles(
    context: dg.AssetExecutionContext,
    stage: str,
    profiles: Sequence[ExplainerProfile | SimulatorProfile],
    llm: LLMClients,
    work: Work,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """`work(profile, client=..., progress=...)` for each profile -> (its rows of the stage's
    table, the audit rows of the LLM calls behind them, usage metadata)."""
    frames, audits, results = [], [], []
    for profile in profiles:
        client = llm.client(profile)
        progress = ProgressLog(
            context.log.info,
            f"{stage} with {profile.name}",
            "rows",
            detail=client.activity if client is not None else None,
        )
        try:
            with progress:
                frame, calls = work(profile, client=client, progress=progress)
        finally:
            if client is not None:
                client.close()
        frames.append(frame)
        audits.append(audit_rows(frame, calls, stage, profile.name))
        results += calls
    usage = Usage.of(results)
    metadata = {f"llm_{key}": value for key, value in vars(usage).items() if value is not None}
    return pl.concat(frames), pl.concat(audits), metadata


def audit_rows(
    frame: pl.DataFrame, calls: list[CallResult], stage: str, profile: str
) -> pl.DataFrame:
    """The audit rows of one profile's calls, each under the layer and explainer whose rows cite
    it (the keys a later write of that layer and explainer replaces)."""
    owners = (
        frame.select("layer", "explainer", call_id="call_ids")
        .explode("call_id")
        .drop_nulls()
        .unique()
    )
    # Sorted by call id: a lineage read of a few calls then skips most row groups.
    return (
        owners.join(calls_frame(calls).unique("call_id", keep="first"), on="call_id", how="inner")
        .with_columns(stage=pl.lit(stage), profile=pl.lit(profile))
        .sort("layer", "call_id")
    )
