"""Dagster assets, one module per stage; each model gets its own copy under its key prefix, and
the activation study and the comparison of models have theirs (`assets.study.study_assets`)."""

import warnings

import dagster as dg

from assets.corpus import corpus_asset
from assets.explanations import explanations_assets
from assets.imported import imported_records_assets
from assets.neuron_records import neuron_records_assets
from assets.revisions import revision_assets
from assets.score_views import score_view_assets
from assets.scores import scores_asset
from assets.simulations import simulations_assets
from assets.study import model_key
from assets.top_k_excerpts import top_k_excerpts_asset
from autointerp.config.settings import ModelSpec, Settings

# BackfillPolicy and content data versions are beta in this Dagster version; the graph relies on
# them deliberately (one forward pass per run over every layer partition; a corpus's identity as
# its data version), so their notices are not shown on every load and run.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=dg.BetaWarning)


def layer_partitions(model: ModelSpec) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([str(layer) for layer in model.layers])


def model_assets(settings: Settings, model: ModelSpec) -> list[dg.AssetsDefinition]:
    """The asset graph of one subject model: captured by a forward pass over the corpus, or
    imported from a published dataset (with its own explainer and simulator profiles)."""
    settings = settings.for_model(model)
    layers = layer_partitions(model)
    trained_by = [
        model_key(activation)
        for activation, name in (settings.study.model_names if settings.study else {}).items()
        if name == model.name
    ]
    records = (
        [imported_records_assets(settings, model, layers)]
        if model.imported
        else [
            corpus_asset(settings, model, trained_by),
            *neuron_records_assets(settings, model, layers, trained_by),
        ]
    )
    return [
        *records,
        top_k_excerpts_asset(model, layers),
        explanations_assets(settings, model, layers),
        simulations_assets(settings, model, layers),
        scores_asset(settings, model, layers),
        *score_view_assets(settings, model),
        *revision_assets(settings, model, layers),
    ]
