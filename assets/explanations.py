"""explanations[layer]: one row per (neuron, explainer profile, sample), from the train top
excerpts; and explainer_calls[layer], the audit rows of the LLM calls behind them."""

import dagster as dg
import polars as pl

from assets.common import (
    blocking_check,
    explainer_profiles,
    run_profiles,
    upstream_versions,
    validated,
)
from autointerp.activations.excerpts import neuron_excerpts, neurons_of, top_mean_tokens
from autointerp.activations.sampling import select_neurons
from autointerp.config.profiles import IMPORTED
from autointerp.config.settings import ModelSpec, Settings
from autointerp.errors import check_error_fraction
from autointerp.explain.explainer_prompt import TOKEN_LIST_PROMPT_VERSION
from autointerp.explain.explanations import explain
from autointerp.interchange.imported import imported_explanations
from autointerp.storage.hashing import content_hash
from autointerp.table_checks import empty_explanations, missing_neurons
from resources.llm import LLMClients

LOGIC_VERSION = "explanations-3"


def explanations_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    profiles = explainer_profiles(settings)
    version = f"{LOGIC_VERSION}-{content_hash([p.hash for p in profiles])}"
    prefix = model.key_prefix
    names = [p.name for p in profiles]
    common = {"group_name": prefix, "code_version": version, "kinds": {"delta", "polars"}}
    # The token-list prompt shows tokens ranked over the whole corpus, kept in the records.
    token_list = any(p.prompt == TOKEN_LIST_PROMPT_VERSION for p in profiles)
    ranked_inputs = (
        {
            "neuron_records": dg.AssetIn(
                key=[prefix, "neuron_records"],
                metadata={"columns": ["neuron", "top_mean_token_ids"]},
            )
        }
        if token_list
        else {}
    )
    corpus_columns = ["excerpt_id", "tokens", *(["token_ids"] if token_list else [])]
    # An imported profile's explanations are the dataset's, never an LLM's.
    imported_inputs = (
        {"imported_explanations": dg.AssetIn(key=[prefix, "imported_explanations"])}
        if any(p.kind == IMPORTED for p in profiles)
        else {}
    )

    @dg.multi_asset(
        name=f"{prefix}__explain",
        ins={
            "top_k_excerpts": dg.AssetIn(key=[prefix, "top_k_excerpts"]),
            "corpus": dg.AssetIn(key=[prefix, "corpus"], metadata={"columns": corpus_columns}),
            **ranked_inputs,
            **imported_inputs,
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
        **inputs: pl.DataFrame,
    ):
        excerpts = neuron_excerpts(top_k_excerpts, corpus)
        records, imported = inputs.get("neuron_records"), inputs.get("imported_explanations")
        ranked = top_mean_tokens(records, corpus) if records is not None else None

        def work(profile, **kw):
            if profile.kind == IMPORTED:
                return imported_explanations(profile, imported), []
            return explain(profile, excerpts, ranked_tokens=ranked, **kw)

        frame, calls, usage = run_profiles(context, "explain", profiles, llm, work)
        # The audit is written first: every call paid for is on record, even if the stage fails.
        yield dg.Output(calls, "explainer_calls", metadata=usage)
        check_error_fraction(
            frame,
            settings.profiles.max_error_fraction,
            stage="explanations",
            audit=f"{prefix}/explainer_calls",
        )
        neurons = neurons_of(excerpts)
        expected = {p.name: select_neurons(neurons, p.neuron_sample) for p in profiles}
        for profile in profiles:
            if profile.kind == IMPORTED:  # the neurons the dataset explains
                expected[profile.name] = imported.select("layer", "neuron").unique().rows()
        results = validated(
            dg.AssetKey([prefix, "explanations"]),
            {
                "no_empty_explanations": empty_explanations(frame),
                "every_neuron_explained": missing_neurons(frame, expected, "explainer"),
            },
        )
        read = ("corpus", *(["imported_explanations"] if imported is not None else []))
        frame = frame.join(upstream_versions(context, prefix, top_k_excerpts, *read), on="layer")
        errors = frame["error"].is_not_null().sum()
        yield dg.Output(frame, "explanations", metadata={**usage, "errors": int(errors)})
        yield from results

    return explain_layers
