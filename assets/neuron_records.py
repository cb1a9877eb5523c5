"""neuron_records[layer]: per neuron, top-k and sampled excerpts with per-token activations, and
the moments of its activations. One forward pass serves every layer partition of a run.

With `[execution] capture_shards` = N > 1, the pass is split: neuron_records_shard_0 … _N-1 each
capture one contiguous shard of the corpus (separate steps, so executors run them side by side),
and neuron_records merges their partial records into exactly the one-pass records."""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from assets.common import gpu_step, table_output
from autointerp.activations.capture import capture_partials, capture_records
from autointerp.activations.neuron_records import (
    RECORDS_ROW_GROUP_ROWS,
    Shard,
    records_summary,
)
from autointerp.activations.partial_records import (
    merge_partials,
    partial_frame,
    read_partials,
    records_frame,
)
from autointerp.activations.residuals import Handoff, ResidualStream
from autointerp.activations.subject_model import SubjectModel, model_identity, resolve_device
from autointerp.config.settings import ModelSpec, Settings
from autointerp.progress import ProgressLog
from autointerp.storage.hashing import content_hash
from resources.subject_models import SubjectModels

LOGIC_VERSION = "neuron-records-3"  # ties broken by excerpt id
SHARD_LOGIC_VERSION = "neuron-record-shards-2"  # random slots: outside the top-k only


def records_metadata(rows: pl.DataFrame) -> dict:
    """One layer's neurons, how many never fire, and the spread of their max activations."""
    summary = records_summary(rows).drop("layer")
    return summary.row(0, named=True) if summary.height else {}


def records_version(settings: Settings, model: ModelSpec) -> str:
    # Batch size and device change no record; the weights and the dtype they run in do.
    identity = model_identity(model, settings.model_cache)
    return f"{LOGIC_VERSION}-{content_hash(settings.records.hash_content(), identity)}"


# The deepest layer of the range a CLI run's capture is part of: a capture run that ends above
# it leaves the residual stream for the run of the next layers (`pipelines.run_plan`).
CAPTURE_RANGE_END_TAG = "autointerp/capture_range_end"


def capture_handoff(
    context: dg.AssetExecutionContext,
    settings: Settings,
    model: ModelSpec,
    version: str,
    corpus: pl.DataFrame,
    shard: Shard | None = None,
) -> Handoff:
    """Where this capture run finds and leaves the residual stream between runs of its range.
    `version`: the records' code version (the weights, their dtype, the records settings)."""
    last = max(int(key) for key in context.partition_keys)
    identity = {
        "records": version,
        "corpus": corpus["corpus_id"][0],
        "shard": [shard.index, shard.count] if shard else None,
        "batch_size": model.batch_size,
        "device": str(resolve_device(model.device)),
    }
    range_end = int(context.run.tags.get(CAPTURE_RANGE_END_TAG, last))
    return Handoff(settings.home / "residuals" / model.name, identity, range_end)


def load_for_pass(
    subject_models: SubjectModels,
    model: ModelSpec,
    layers: Sequence[int],
    entering: ResidualStream | None,
) -> SubjectModel:
    """The model through the deepest layer of the pass, without the blocks below its first
    when it starts from the hidden states a run before it left."""
    return subject_models.load(
        model, through_layer=layers[-1], from_layer=layers[0] if entering else 0
    )


def _description(settings: Settings, model: ModelSpec) -> str:
    return (
        f"One row per neuron of a {model.name} layer: the top {settings.records.top_k} "
        f"excerpts by max activation, {settings.records.random_k} random excerpts, "
        f"{settings.records.quantile_k} per quantile band, with per-token activations; mean, "
        "variance, skewness, kurtosis, max and quantile boundaries."
    )


SHARD_PREFIX = "neuron_records_shard_"


def shard_names(settings: Settings) -> list[str]:
    """The names of the shard assets (none when the corpus is captured in one pass)."""
    shards = settings.execution.capture_shards
    return [f"{SHARD_PREFIX}{i}" for i in range(shards)] if shards > 1 else []


def neuron_records_assets(
    settings: Settings,
    model: ModelSpec,
    layers: dg.PartitionsDefinition,
    deps: Sequence[dg.AssetKey] = (),
) -> list[dg.AssetsDefinition]:
    """`deps`: assets that write the model itself (a study model's training), if any; every
    step that runs the model waits for them."""
    shards = settings.execution.capture_shards
    if shards > 1:
        return [
            *(shard_asset(settings, model, layers, Shard(i, shards), deps) for i in range(shards)),
            merged_records_asset(settings, model, layers),
        ]
    return [one_pass_asset(settings, model, layers, deps)]


def one_pass_asset(
    settings: Settings,
    model: ModelSpec,
    layers: dg.PartitionsDefinition,
    deps: Sequence[dg.AssetKey],
) -> dg.AssetsDefinition:
    version = records_version(settings, model)

    @dg.asset(
        key=[model.key_prefix, "neuron_records"],
        ins={"corpus": dg.AssetIn(key=[model.key_prefix, "corpus"])},
        deps=deps,
        partitions_def=layers,
        # Several layer partitions in one run share one forward pass over the corpus.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=model.key_prefix,
        code_version=version,
        description=_description(settings, model),
        metadata={"partition_column": "layer", "row_group_rows": RECORDS_ROW_GROUP_ROWS},
        kinds={"delta", "polars", "pytorch"},
        **gpu_step(settings),
    )
    def neuron_records(
        context: dg.AssetExecutionContext, corpus: pl.DataFrame, subject_models: SubjectModels
    ) -> dg.Output:
        layers_run = sorted(int(key) for key in context.partition_keys)
        handoff = capture_handoff(context, settings, model, version, corpus)
        entering, leaving = handoff.streams(layers_run)
        subject = load_for_pass(subject_models, model, layers_run, entering)
        context.log.info(
            f"capturing layers {layers_run} of {model.name} over {corpus.height:,} excerpts "
            f"({subject.dtype}, {subject.device}, batch {model.batch_size})"
            + (f", from the hidden states in {entering.path}" if entering else "")
        )
        frame = capture_records(
            subject,
            corpus,
            layers_run,
            settings.records,
            progress=ProgressLog(context.log.info, "forward pass", "excerpts"),
            entering=entering,
            leaving=leaving,
        )
        # Writing the records peaks at several times their size: the model is not held meanwhile.
        del subject
        subject_models.release()
        frame = frame.with_columns(corpus_id=pl.lit(corpus["corpus_id"][0]))  # which corpus
        return table_output(context, frame, per_partition=records_metadata)

    return neuron_records


def shard_asset(
    settings: Settings,
    model: ModelSpec,
    layers: dg.PartitionsDefinition,
    shard: Shard,
    deps: Sequence[dg.AssetKey],
) -> dg.AssetsDefinition:
    version = records_version(settings, model)

    @dg.asset(
        key=[model.key_prefix, f"{SHARD_PREFIX}{shard.index}"],
        ins={"corpus": dg.AssetIn(key=[model.key_prefix, "corpus"])},
        deps=deps,
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=model.key_prefix,
        code_version=f"{SHARD_LOGIC_VERSION}-{shard.count}-{version}",
        description=(
            f"Partial neuron records of corpus shard {shard.index} of {shard.count} (the "
            f"{shard.index + 1}th contiguous run of excerpts): candidate excerpts, central "
            "moments, maxima, per-token sums, and the quantile boundaries of the shared pool."
        ),
        metadata={"partition_column": "layer"},
        kinds={"delta", "polars", "pytorch"},
        **gpu_step(settings),
    )
    def neuron_records_shard(
        context: dg.AssetExecutionContext, corpus: pl.DataFrame, subject_models: SubjectModels
    ) -> pl.DataFrame:
        layers_run = sorted(int(key) for key in context.partition_keys)
        handoff = capture_handoff(context, settings, model, version, corpus, shard)
        entering, leaving = handoff.streams(layers_run)
        subject = load_for_pass(subject_models, model, layers_run, entering)
        partials = capture_partials(
            subject,
            corpus,
            layers_run,
            settings.records,
            shard=shard,
            progress=ProgressLog(context.log.info, f"shard {shard.index}", "excerpts"),
            entering=entering,
            leaving=leaving,
        )
        frame = pl.concat([partial_frame(partial) for partial in partials])
        del subject
        subject_models.release()
        context.add_output_metadata({"layers": str(layers_run), "neurons": frame.height})
        return frame.with_columns(corpus_id=pl.lit(corpus["corpus_id"][0]))

    return neuron_records_shard


def merged_records_asset(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    names = shard_names(settings)

    @dg.asset(
        key=[model.key_prefix, "neuron_records"],
        ins={name: dg.AssetIn(key=[model.key_prefix, name]) for name in names},
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=model.key_prefix,
        # The same records as one pass: the same code version.
        code_version=records_version(settings, model),
        description=_description(settings, model) + f" Merged from {len(names)} corpus shards.",
        metadata={"partition_column": "layer", "row_group_rows": RECORDS_ROW_GROUP_ROWS},
        kinds={"delta", "polars"},
    )
    def neuron_records(context: dg.AssetExecutionContext, **shard_frames: pl.DataFrame):
        frames = [shard_frames[name] for name in names]
        corpus_ids = {frame["corpus_id"][0] for frame in frames}
        if len(corpus_ids) != 1:
            raise dg.Failure(f"the shards were captured from different corpora: {corpus_ids}")
        per_shard = [read_partials(frame, settings.records) for frame in frames]
        merged = [
            records_frame(merge_partials(list(layer), settings.records.seed), settings.records)
            for layer in zip(*per_shard, strict=True)
        ]
        frame = pl.concat(merged).with_columns(corpus_id=pl.lit(corpus_ids.pop()))
        return table_output(context, frame, per_partition=records_metadata)

    return neuron_records
