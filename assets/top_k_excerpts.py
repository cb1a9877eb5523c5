"""top_k_excerpts[layer]: each neuron's excerpts in the reference splits (train / calibration /
valid / test; top and random 1:1 in the scoring splits), one row per excerpt naming its split,
with the excerpt's token strings: what every later stage reads, so none of them reads the corpus
for its text."""

import dagster as dg
import polars as pl

from assets.common import table_output
from autointerp.activations.excerpts import excerpts_of_records
from autointerp.activations.splits import SPLIT_COLUMNS
from autointerp.config.settings import ModelSpec
from resources.delta_io import version_read

LOGIC_VERSION = "top-k-excerpts-3"


def top_k_excerpts_asset(model: ModelSpec, layers: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    prefix = model.key_prefix

    @dg.asset(
        key=[prefix, "top_k_excerpts"],
        ins={
            "neuron_records": dg.AssetIn(
                key=[prefix, "neuron_records"], metadata={"columns": [*SPLIT_COLUMNS, "corpus_id"]}
            ),
            "corpus": dg.AssetIn(
                key=[prefix, "corpus"], metadata={"columns": ["corpus_id", "excerpt_id", "tokens"]}
            ),
        },
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=prefix,
        code_version=LOGIC_VERSION,
        description=(
            "The reference method's splits of every neuron's excerpts, with their tokens: the "
            "explainer sees the train top records; calibration, valid and test mix top and "
            "random records 1:1."
        ),
        metadata={"partition_column": "layer"},
        kinds={"delta", "polars"},
    )
    def top_k_excerpts(
        context: dg.AssetExecutionContext, neuron_records: pl.DataFrame, corpus: pl.DataFrame
    ) -> dg.Output:
        read = {
            f"{name}_version": pl.lit(
                version_read(context, dg.AssetKey([prefix, name])), dtype=pl.Int64
            )
            for name in ("neuron_records", "corpus")
        }
        # Refused where the corpus is not the one the records were captured over.
        frame = excerpts_of_records(neuron_records, corpus).with_columns(**read)
        return table_output(context, frame)

    return top_k_excerpts
