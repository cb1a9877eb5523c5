"""scores[layer]: correlation scoring of every simulation (top-only, random-only and
top-and-random, per split), plus rsquared and absolute deviation explained."""

import dagster as dg
import polars as pl

from assets.simulations import profiles_version, simulator_profiles
from autointerp.config import ModelSpec, Settings
from autointerp.scores import score

LOGIC_VERSION = "scores-1"


def scores_asset(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    calibrated = {p.name for p in simulator_profiles(settings) if p.calibration}

    @dg.asset(
        key=[model.key_prefix, "scores"],
        ins={"simulations": dg.AssetIn(key=[model.key_prefix, "simulations"])},
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=model.key_prefix,
        code_version=profiles_version(settings, LOGIC_VERSION),
        description=(
            "Scores pooling all tokens of the scored excerpts: ev_correlation (Pearson; NaN when "
            "either side is constant), rsquared, absolute_dev_explained; on top, random and "
            "top_and_random excerpts of the calibration, valid and test splits. Simulators with "
            "calibration are scored after a linear map fitted on the calibration split."
        ),
        metadata={"partition_column": "layer"},
        kinds={"delta", "polars"},
    )
    def scores(simulations: pl.DataFrame) -> pl.DataFrame:
        by_simulator = simulations.partition_by("simulator", as_dict=True)
        frames = [
            score(rows, calibrate=name in calibrated) for (name,), rows in by_simulator.items()
        ]
        return pl.concat(frames) if frames else score(simulations, calibrate=False)

    return scores
