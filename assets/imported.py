"""corpus, neuron_records and imported_explanations [layer] of a model imported from a published
dataset (ModelSpec `openai_dataset`): read from its files in one step per run, no forward pass.
Every file of the run's layers is read and checked before anything is written, so a bad file
fails the step with an error naming it and leaves the three tables as they were."""

import dagster as dg

from autointerp.config.profiles import IMPORT_VERSION
from autointerp.config.settings import ModelSpec, Settings
from autointerp.interchange.importing import import_layers
from autointerp.interchange.layout import Dataset
from autointerp.progress import ProgressLog
from autointerp.storage.hashing import content_hash

LOGIC_VERSION = "import-2"


def imported_records_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    prefix = model.key_prefix
    # What the import reads and keeps: the files (by where they are), which neurons, how many
    # excerpts of each kind.
    identity = [model.openai_dataset, model.neurons, model.neuron_sample, IMPORT_VERSION]
    common = {
        "group_name": prefix,
        "code_version": f"{LOGIC_VERSION}-{content_hash(identity, settings.records)}",
        "metadata": {"partition_column": "layer"},
        "kinds": {"delta", "polars"},
    }
    source = f"`{model.openai_dataset}`"

    @dg.multi_asset(
        name=f"{prefix}__import",
        outs={
            "corpus": dg.AssetOut(
                key=[prefix, "corpus"],
                description=(
                    f"The excerpts of the records imported from {source}, per layer, each "
                    "layer's a corpus of its own: corpus_id (a hash of its content, which the "
                    "layer's records name), excerpt_id (from the record's file and position), "
                    "text, tokens as published, source (the record file), license."
                ),
                **common,
            ),
            "neuron_records": dg.AssetOut(
                key=[prefix, "neuron_records"],
                description=(
                    f"One row per imported neuron of {source}: its NeuronRecord as the capture's "
                    "columns (top, random, reference and quantile-band excerpts with per-token "
                    "activations, moments, quantile boundaries), record_file and "
                    "explanation_file."
                ),
                **common,
            ),
            "imported_explanations": dg.AssetOut(
                key=[prefix, "imported_explanations"],
                description=(
                    f"The explanations of {source} with their scored simulations and stored "
                    "scores, one row per neuron and sample: what the imported explainer and "
                    "simulator profiles write into explanations, simulations and scores."
                ),
                **common,
            ),
        },
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def import_dataset(context: dg.AssetExecutionContext):
        layers_run = sorted(int(key) for key in context.partition_keys)
        dataset = Dataset(str(model.openai_dataset), allow_network=settings.allow_hub)
        context.log.info(f"importing layers {layers_run} of {model.name} from {dataset.location}")
        corpus, records, explanations = import_layers(
            dataset,
            layers_run,
            neurons=int(model.neurons or 0),
            neuron_sample=model.neuron_sample,
            spec=settings.records,
            progress=ProgressLog(context.log.info, "import", "neurons"),
        )
        yield dg.Output(corpus, "corpus", metadata={"excerpts": corpus.height})
        yield dg.Output(
            records,
            "neuron_records",
            metadata={"layers": str(layers_run), "neurons": records.height},
        )
        yield dg.Output(
            explanations,
            "imported_explanations",
            metadata={"explanations": explanations.height},
        )

    return import_dataset
