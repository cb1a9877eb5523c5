"""Dagster assets, one module per stage; each model gets its own copy under its key prefix."""

import dagster as dg

from assets.corpus import corpus_asset
from assets.neuron_records import neuron_records_asset
from assets.top_k_excerpts import top_k_excerpts_asset
from autointerp.config import ModelSpec, Settings


def layer_partitions(model: ModelSpec) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([str(layer) for layer in model.layers])


def model_assets(settings: Settings, model: ModelSpec) -> list[dg.AssetsDefinition]:
    """The asset graph of one subject model."""
    layers = layer_partitions(model)
    return [
        corpus_asset(settings, model),
        neuron_records_asset(settings, model, layers),
        top_k_excerpts_asset(model, layers),
    ]
