"""compare: explainers side by side on the neurons they share — the data behind "larger
explainers score higher"."""

import dagster as dg
import polars as pl

from autointerp.compare import compare_explainers
from autointerp.config import ModelSpec

LOGIC_VERSION = "compare-1"


def compare_asset(model: ModelSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=[model.key_prefix, "compare"],
        ins={"scores": dg.AssetIn(key=[model.key_prefix, "scores"])},
        group_name=model.key_prefix,
        code_version=LOGIC_VERSION,
        description=(
            "Every pair of explainers (same simulator) on the neurons they share: mean "
            "ev_correlation of each on top_and_random of the test split (each neuron's best "
            "sample chosen on valid), the paired difference with a bootstrap 95% interval, and "
            "how many neurons each wins."
        ),
        kinds={"delta", "polars"},
    )
    def compare(scores: pl.DataFrame) -> pl.DataFrame:
        return compare_explainers(scores)

    return compare
