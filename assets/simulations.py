"""simulations[layer]: each simulator's expected activation for every token of every scoring
excerpt, per explanation; and simulator_calls[layer], the audit rows of its LLM calls."""

import dagster as dg
import polars as pl

from assets.common import (
    active_keys,
    profiles_version,
    run_profiles,
    simulator_profiles,
    upstream_versions,
)
from autointerp.activations.excerpts import neuron_excerpts
from autointerp.config.profiles import IMPORTED
from autointerp.config.settings import ModelSpec, Settings
from autointerp.errors import check_error_fraction
from autointerp.interchange.imported import imported_simulations
from autointerp.score.floor import shuffled_scores
from autointerp.simulate.simulations import simulate
from autointerp.storage.hashing import content_hash
from resources.llm import LLMClients

LOGIC_VERSION = "simulations-4"


def simulations_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    profiles = simulator_profiles(settings)
    # An imported simulator only reads the dataset's simulations of its own explanations: it
    # simulates no other explanation, the shuffled ones of the chance floor included.
    imported = [p for p in profiles if p.kind == IMPORTED]
    floor_profiles = [p for p in profiles if p.kind != IMPORTED]
    prefix = model.key_prefix
    floor = settings.summaries
    common = {
        "group_name": prefix,
        "code_version": profiles_version(
            settings, f"{LOGIC_VERSION}-{content_hash(floor.floor_sample, floor.floor_seed)}"
        ),
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
            **(
                {"imported_explanations": dg.AssetIn(key=[prefix, "imported_explanations"])}
                if imported
                else {}
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
            "shuffled_scores": dg.AssetOut(
                key=[prefix, "shuffled_scores"],
                description=(
                    "The chance floor: each sampled neuron (`[summaries] floor_sample`) scored "
                    "on its test excerpts with another neuron's explanation (`source_neuron`), "
                    "by the same simulator. score_summary reports its mean beside the real one."
                ),
                **common,
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
        **inputs: pl.DataFrame,
    ):
        excerpts = neuron_excerpts(top_k_excerpts, corpus)
        # The table holds every explainer's rows that were ever written; simulate the active ones.
        explanations = explanations.filter(
            pl.col("explainer").is_in(settings.profiles.active_explainers)
        )

        def work(profile, **kw):
            if profile.kind == IMPORTED:
                return imported_simulations(
                    profile, explanations, inputs["imported_explanations"]
                ), []
            return simulate(profile, explanations, excerpts, **kw)

        frame, calls, usage = run_profiles(context, "simulate", profiles, llm, work)
        shuffled, floor_calls, floor_usage = run_profiles(
            context,
            "chance floor",
            floor_profiles,
            llm,
            lambda profile, **kw: shuffled_scores(
                profile,
                explanations,
                excerpts,
                neuron_sample=floor.floor_sample,
                seed=floor.floor_seed,
                **kw,
            ),
        )
        # The audit is written first: every call paid for is on record, even if the stage fails.
        yield dg.Output(
            pl.concat([calls, floor_calls]).unique(["layer", "explainer", "call_id"]),
            "simulator_calls",
            metadata={**usage, **{f"floor_{key}": value for key, value in floor_usage.items()}},
        )
        check_error_fraction(
            frame,
            settings.profiles.max_error_fraction,
            stage="simulations",
            audit=f"{prefix}/simulator_calls",
        )
        read = ("explanations", "corpus", *(["imported_explanations"] if imported else []))
        versions = upstream_versions(context, prefix, top_k_excerpts, *read)
        frame = frame.join(versions, on="layer")
        errors = frame["error"].is_not_null().sum()
        methods = dict(frame.group_by("method").len().iter_rows())
        yield dg.Output(
            frame,
            "simulations",
            metadata={**usage, "errors": int(errors), "methods": str(methods)},
        )
        yield dg.Output(
            shuffled, "shuffled_scores", metadata={"neurons": shuffled["neuron"].n_unique()}
        )

    return simulate_layers
