"""score_summary: per layer, explainer and simulator, how well the explanations score."""

import dagster as dg
import polars as pl

from autointerp.config import ModelSpec
from autointerp.scores import score_summary

LOGIC_VERSION = "score-summary-1"


def score_summary_asset(model: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[model.key_prefix, "score_summary"],
        ins={"scores": dg.AssetIn(key=[model.key_prefix, "scores"])},
        group_name=model.key_prefix,
        code_version=LOGIC_VERSION,
        description=(
            "Per layer, explainer and simulator: neurons, mean, median and p90 of ev_correlation "
            "on top_and_random of the test split, and the count at or above 0.8 (each neuron's "
            "best sample chosen on the valid split)."
        ),
        kinds={"delta", "polars"},
    )
    def summary(scores: pl.DataFrame) -> pl.DataFrame:
        return score_summary(scores)

    return summary
