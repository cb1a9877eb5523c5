"""explanations[layer]: one row per (neuron, explainer profile, sample), from the train top
excerpts; and explainer_calls[layer], the audit rows of the LLM calls behind them."""

import dagster as dg
import polars as pl

from assets.common import (
    blocking_check,
    check_result,
    explainer_profiles,
    run_profiles,
    upstream_versions,
)
from autointerp.activations.excerpts import neuron_excerpts, neurons_of
from autointerp.activations.sampling import select_neurons
from autointerp.config.settings import ModelSpec, Settings
from autointerp.errors import check_error_fraction
from autointerp.explain.explanations import explain
from autointerp.storage.hashing import content_hash
from autointerp.table_checks import empty_explanations, missing_neurons
from resources.llm import LLMClients

LOGIC_VERSION = "explanations-2"


def explanations_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    profiles = explainer_profiles(settings)
    version = f"{LOGIC_VERSION}-{content_hash([p.hash for p in profiles])}"
    prefix = model.key_prefix
    names = [p.name for p in profiles]
    common = {"group_name": prefix, "code_version": version, "kinds": {"delta", "polars"}}

    @dg.multi_asset(
        name=f"{prefix}__explain",
        ins={
            "top_k_excerpts": dg.AssetIn(key=[prefix, "top_k_excerpts"]),
            "corpus": dg.AssetIn(
                key=[prefix, "corpus"], metadata={"columns": ["excerpt_id", "tokens"]}
            ),
        },
        outs={
            "explanations": dg.AssetOut(
                key=[prefix, "explanations"],
                description=(
                    "One row per (neuron, explainer, sample): the explanation, the profile and "
                    f"its hash, the prompt hash and LLM call ids, or the error. Explainers: "
                    f"{', '.join(names)}."
                ),
                # A write replaces only the active explainers' rows: other profiles' stay.
                metadata={"partition_column": "layer", "replace_within": {"explainer": names}},
                **common,
            ),
            "explainer_calls": dg.AssetOut(
                key=[prefix, "explainer_calls"],
                description="Audit of the explainers' LLM calls: request as sent, response, "
                "tokens, cost, latency, status, attempts. Never an API key.",
                metadata={"partition_column": "layer", "replace_within": {"explainer": names}},
                **common,
            ),
        },
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
        check_specs=[
            blocking_check(
                dg.AssetKey([prefix, "explanations"]),
                "no_empty_explanations",
                "Every row without an error holds a non-empty explanation.",
            ),
            blocking_check(
                dg.AssetKey([prefix, "explanations"]),
                "every_neuron_explained",
                "Every neuron each explainer's neuron_sample selects has a row.",
            ),
        ],
    )
    def explain_layers(
        context: dg.AssetExecutionContext,
        top_k_excerpts: pl.DataFrame,
        corpus: pl.DataFrame,
        llm: LLMClients,
    ):
        excerpts = neuron_excerpts(top_k_excerpts, corpus)
        frame, calls, usage = run_profiles(
            context,
            "explain",
            profiles,
            llm,
            lambda profile, **kw: explain(profile, excerpts, **kw),
        )
        check_error_fraction(frame, settings.profiles.max_error_fraction, stage="explanations")
        frame = frame.join(upstream_versions(context, prefix, top_k_excerpts), on="layer")
        errors = frame["error"].is_not_null().sum()
        yield dg.Output(frame, "explanations", metadata={**usage, "errors": int(errors)})
        yield dg.Output(calls, "explainer_calls", metadata=usage)
        key = dg.AssetKey([prefix, "explanations"])
        yield check_result(key, "no_empty_explanations", empty_explanations(frame))
        neurons = neurons_of(excerpts)
        expected = {p.name: select_neurons(neurons, p.neuron_sample) for p in profiles}
        yield check_result(
            key, "every_neuron_explained", missing_neurons(frame, expected, "explainer")
        )

    return explain_layers
