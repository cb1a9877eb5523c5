"""top_k_excerpts[layer]: each neuron's excerpts in the reference splits (train / calibration /
valid / test; top and random 1:1 in the scoring splits), one row per excerpt naming its split."""

import dagster as dg
import polars as pl

from autointerp.activations.splits import split_records
from autointerp.config.settings import ModelSpec
from resources.delta_io import version_read

LOGIC_VERSION = "top-k-excerpts-3"


def top_k_excerpts_asset(model: ModelSpec, layers: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=[model.key_prefix, "top_k_excerpts"],
        ins={"neuron_records": dg.AssetIn(key=[model.key_prefix, "neuron_records"])},
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=model.key_prefix,
        code_version=LOGIC_VERSION,
        description=(
            "The reference method's splits of every neuron's excerpts: the explainer sees the "
            "train top records; calibration, valid and test mix top and random records 1:1."
        ),
        metadata={"partition_column": "layer"},
        kinds={"delta", "polars"},
    )
    def top_k_excerpts(
        context: dg.AssetExecutionContext, neuron_records: pl.DataFrame
    ) -> pl.DataFrame:
        read = version_read(context, dg.AssetKey([model.key_prefix, "neuron_records"]))
        corpora = neuron_records.select("layer", "corpus_id").unique("layer")
        return (
            split_records(neuron_records)
            .with_columns(neuron_records_version=pl.lit(read, dtype=pl.Int64))
            .join(corpora, on="layer", how="left")
        )

    return top_k_excerpts
