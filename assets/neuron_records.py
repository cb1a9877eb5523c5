"""neuron_records[layer]: per neuron, top-k and sampled excerpts with per-token activations, and
the moments of its activations. One forward pass serves every layer partition of a run."""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from autointerp.activations.capture import capture_records
from autointerp.activations.neuron_records import RECORDS_ROW_GROUP_ROWS
from autointerp.activations.subject_model import model_identity
from autointerp.config.settings import ModelSpec, Settings
from autointerp.progress import ProgressLog
from autointerp.storage.hashing import content_hash
from resources.subject_models import SubjectModels

LOGIC_VERSION = "neuron-records-2"


def neuron_records_asset(
    settings: Settings,
    model: ModelSpec,
    layers: dg.PartitionsDefinition,
    deps: Sequence[dg.AssetKey] = (),
) -> dg.AssetsDefinition:
    """`deps`: assets that write the model itself (a study model's training), if any."""
    # Batch size and device change no record; the weights and the dtype they run in do.
    identity = model_identity(model, settings.model_cache)

    @dg.asset(
        key=[model.key_prefix, "neuron_records"],
        ins={"corpus": dg.AssetIn(key=[model.key_prefix, "corpus"])},
        deps=deps,
        partitions_def=layers,
        # Several layer partitions in one run share one forward pass over the corpus.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=model.key_prefix,
        code_version=f"{LOGIC_VERSION}-{content_hash(settings.records.hash_content(), identity)}",
        description=(
            f"One row per neuron of a {model.name} layer: the top {settings.records.top_k} "
            f"excerpts by max activation, {settings.records.random_k} random excerpts, "
            f"{settings.records.quantile_k} per quantile band, with per-token activations; mean, "
            "variance, skewness, kurtosis, max and quantile boundaries."
        ),
        metadata={"partition_column": "layer", "row_group_rows": RECORDS_ROW_GROUP_ROWS},
        kinds={"delta", "polars", "pytorch"},
    )
    def neuron_records(
        context: dg.AssetExecutionContext, corpus: pl.DataFrame, subject_models: SubjectModels
    ) -> pl.DataFrame:
        layers_run = sorted(int(key) for key in context.partition_keys)
        subject = subject_models.load(model)
        context.log.info(
            f"capturing layers {layers_run} of {model.name} over {corpus.height:,} excerpts "
            f"({subject.dtype}, {subject.device}, batch {model.batch_size})"
        )
        frame = capture_records(
            subject,
            corpus,
            layers_run,
            settings.records,
            progress=ProgressLog(context.log.info, "forward pass", "excerpts"),
        )
        context.add_output_metadata({"layers": str(layers_run), "neurons": frame.height})
        return frame.with_columns(corpus_id=pl.lit(corpus["corpus_id"][0]))  # which corpus

    return neuron_records
