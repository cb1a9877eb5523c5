"""scores[layer]: correlation scoring of every simulation (top-only, random-only and
top-and-random, per split), plus rsquared and absolute deviation explained, each row carrying
its lineage."""

import dagster as dg
import polars as pl

from assets.common import (
    active_keys,
    blocking_check,
    profiles_version,
    simulator_profiles,
    validated,
)
from autointerp.config.profiles import IMPORTED
from autointerp.config.settings import ModelSpec, Settings
from autointerp.interchange.imported import imported_scores
from autointerp.lineage.ids import explanation_id, simulation_id
from autointerp.score.scores import score
from autointerp.storage.schemas import SCORE_KEYS
from autointerp.table_checks import out_of_range_scores, unscored_neurons
from resources.delta_io import version_read

LOGIC_VERSION = "scores-3"


def scores_asset(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    calibrated = {p.name for p in simulator_profiles(settings) if p.calibration}
    # An imported simulator's scores are the dataset's, as stored: never recomputed.
    imported = {p.name for p in simulator_profiles(settings) if p.kind == IMPORTED}
    prefix = model.key_prefix
    code_version = profiles_version(settings, LOGIC_VERSION)

    @dg.asset(
        key=[prefix, "scores"],
        ins={
            "simulations": dg.AssetIn(key=[prefix, "simulations"]),
            "explanations": dg.AssetIn(
                key=[prefix, "explanations"],
                metadata={
                    "columns": [
                        "layer",
                        "neuron",
                        "explainer",
                        "explainer_hash",
                        "sample",
                        "call_ids",
                        "error",
                    ]
                },
            ),
            # Read for the versions that go with the explanations and simulations read, so that
            # lineage shows the calls as these scores saw them.
            "explainer_calls": dg.AssetIn(
                key=[prefix, "explainer_calls"], metadata={"columns": ["call_id"]}
            ),
            "simulator_calls": dg.AssetIn(
                key=[prefix, "simulator_calls"], metadata={"columns": ["call_id"]}
            ),
            **(
                {"imported_explanations": dg.AssetIn(key=[prefix, "imported_explanations"])}
                if imported
                else {}
            ),
        },
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=prefix,
        code_version=code_version,
        description=(
            "Scores pooling all tokens of the scored excerpts: ev_correlation (Pearson; NaN when "
            "either side is constant), rsquared, absolute_dev_explained; on top, random and "
            "top_and_random excerpts of the calibration, valid and test splits. Simulators with "
            "calibration are scored after a linear map fitted on the calibration split. Lineage "
            "per row: explanation and simulation ids, profile hashes, LLM call ids, excerpt ids, "
            "the Delta versions of every upstream table, the run id and code version."
        ),
        metadata={"partition_column": "layer", "replace_within": active_keys(settings)},
        kinds={"delta", "polars"},
        check_specs=[
            blocking_check(
                dg.AssetKey([prefix, "scores"]),
                "scores_in_range",
                "ev_correlation lies in [-1, 1], or is NaN with undefined_reason.",
            ),
            blocking_check(
                dg.AssetKey([prefix, "scores"]),
                "every_explanation_scored",
                "Every neuron with a usable explanation has scores, but for those whose "
                "simulations failed, which may be no more than max_error_fraction of them.",
            ),
        ],
    )
    def scores(
        context: dg.AssetExecutionContext,
        simulations: pl.DataFrame,
        explanations: pl.DataFrame,
        explainer_calls: pl.DataFrame,  # read for its version (see ins)
        simulator_calls: pl.DataFrame,
        **stored: pl.DataFrame,
    ):
        keys = active_keys(settings)
        simulations = simulations.filter(
            pl.col("explainer").is_in(keys["explainer"])
            & pl.col("simulator").is_in(keys["simulator"])
        )
        explanations = explanations.filter(pl.col("explainer").is_in(keys["explainer"]))
        frames = [
            imported_scores(rows, stored["imported_explanations"])
            if name in imported
            else score(rows, calibrate=name in calibrated)
            for (name,), rows in simulations.partition_by("simulator", as_dict=True).items()
        ]
        scored = pl.concat(frames) if frames else score(simulations, calibrate=False)
        results = validated(
            dg.AssetKey([prefix, "scores"]),
            {
                "scores_in_range": out_of_range_scores(scored),
                "every_explanation_scored": unscored_neurons(
                    scored, explanations, simulations, settings.profiles.max_error_fraction
                ),
            },
        )
        scored = scored.join(lineage(context, simulations, explanations), on=SCORE_KEYS, how="left")
        yield dg.Output(scored)
        yield from results

    def lineage(
        context: dg.AssetExecutionContext, simulations: pl.DataFrame, explanations: pl.DataFrame
    ) -> pl.DataFrame:
        """Per simulated explanation: ids, call ids, upstream versions, run and code version."""
        read = {
            name: version_read(context, dg.AssetKey([prefix, name]))
            for name in ("simulations", "explanations", "explainer_calls", "simulator_calls")
        }
        return (
            simulations.group_by(SCORE_KEYS)
            .agg(
                pl.col("call_ids")
                .explode()
                .drop_nulls()
                .unique()
                .sort()
                .alias("simulation_call_ids"),
                pl.col(
                    "corpus_id",
                    "neuron_records_version",
                    "top_k_excerpts_version",
                    "corpus_version",
                ).first(),
            )
            .join(
                explanations.select(
                    "layer",
                    "neuron",
                    "explainer",
                    "explainer_hash",
                    "sample",
                    explanation_call_ids="call_ids",
                ),
                on=["layer", "neuron", "explainer", "explainer_hash", "sample"],
                how="left",
            )
            .with_columns(
                explanation_id=explanation_id(),
                simulation_id=simulation_id(),
                simulations_version=pl.lit(read["simulations"], dtype=pl.Int64),
                explanations_version=pl.lit(read["explanations"], dtype=pl.Int64),
                explainer_calls_version=pl.lit(read["explainer_calls"], dtype=pl.Int64),
                simulator_calls_version=pl.lit(read["simulator_calls"], dtype=pl.Int64),
                dagster_run_id=pl.lit(context.run.run_id),
                code_version=pl.lit(code_version),
            )
        )

    return scores
