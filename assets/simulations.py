"""simulations[layer]: each simulator's expected activation for every token of every scoring
excerpt, per explanation; and simulator_calls[layer], the audit rows of its LLM calls."""

import dagster as dg
import polars as pl

from assets.explanations import explainer_profiles
from assets.lineage import upstream_versions
from assets.llm_stage import run_profiles
from autointerp.config import ModelSpec, Settings
from autointerp.explanations import check_error_fraction, neuron_excerpts
from autointerp.hashing import content_hash
from autointerp.simulations import simulate
from resources.llm import LLMClients

LOGIC_VERSION = "simulations-2"


def simulator_profiles(settings: Settings) -> list:
    return [settings.profiles.simulator(name) for name in settings.profiles.active_simulators]


def profiles_version(settings: Settings, logic: str) -> str:
    """A code version from the hashes of the active explainers and simulators."""
    hashes = [p.hash for p in explainer_profiles(settings) + simulator_profiles(settings)]
    return f"{logic}-{content_hash(hashes)}"


def active_keys(settings: Settings) -> dict[str, list[str]]:
    """The explainer and simulator names whose rows a write of this stage replaces."""
    return {
        "explainer": list(settings.profiles.active_explainers),
        "simulator": list(settings.profiles.active_simulators),
    }


def simulations_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    profiles = simulator_profiles(settings)
    prefix = model.key_prefix
    common = {
        "group_name": prefix,
        "code_version": profiles_version(settings, LOGIC_VERSION),
        "metadata": {"partition_column": "layer", "replace_within": active_keys(settings)},
        "kinds": {"delta", "polars"},
    }

    @dg.multi_asset(
        name=f"{prefix}__simulate",
        ins={
            "explanations": dg.AssetIn(key=[prefix, "explanations"]),
            "top_k_excerpts": dg.AssetIn(key=[prefix, "top_k_excerpts"]),
            "corpus": dg.AssetIn(
                key=[prefix, "corpus"], metadata={"columns": ["excerpt_id", "tokens"]}
            ),
        },
        outs={
            "simulations": dg.AssetOut(
                key=[prefix, "simulations"],
                description=(
                    "The simulator's expected activation (0-10 scale) for every token of every "
                    "calibration, valid and test excerpt, beside the true activations. "
                    f"Simulators: {', '.join(p.name for p in profiles)}."
                ),
                **common,
            ),
            "simulator_calls": dg.AssetOut(
                key=[prefix, "simulator_calls"],
                description="Audit of the simulators' LLM calls (as explainer_calls).",
                **{
                    **common,
                    "metadata": {
                        "partition_column": "layer",
                        "replace_within": {
                            "explainer": active_keys(settings)["explainer"],
                            "profile": active_keys(settings)["simulator"],
                        },
                    },
                },
            ),
        },
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
    )
    def simulate_layers(
        context: dg.AssetExecutionContext,
        explanations: pl.DataFrame,
        top_k_excerpts: pl.DataFrame,
        corpus: pl.DataFrame,
        llm: LLMClients,
    ):
        excerpts = neuron_excerpts(top_k_excerpts, corpus)
        # The table holds every explainer's rows that were ever written; simulate the active ones.
        explanations = explanations.filter(
            pl.col("explainer").is_in(settings.profiles.active_explainers)
        )
        frame, calls, usage = run_profiles(
            context,
            "simulate",
            profiles,
            llm,
            lambda profile, **kw: simulate(profile, explanations, excerpts, **kw),
        )
        check_error_fraction(frame, settings.profiles.max_error_fraction, stage="simulations")
        versions = upstream_versions(context, prefix, top_k_excerpts, "explanations")
        frame = frame.join(versions, on="layer")
        errors = frame["error"].is_not_null().sum()
        yield dg.Output(frame, "simulations", metadata={**usage, "errors": int(errors)})
        yield dg.Output(calls, "simulator_calls", metadata=usage)

    return simulate_layers
