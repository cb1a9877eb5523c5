"""Views over every layer's scores (unpartitioned): score_summary and compare."""

from collections.abc import Callable

import dagster as dg
import polars as pl

from assets.common import summary_version
from autointerp.config.settings import ModelSpec, Settings
from autointerp.score.compare import compare_explainers
from autointerp.score.summary import score_summary


def _view(
    model: ModelSpec,
    name: str,
    version: str,
    description: str,
    compute: Callable[[pl.DataFrame], pl.DataFrame],
) -> dg.AssetsDefinition:
    @dg.asset(
        key=[model.key_prefix, name],
        ins={"scores": dg.AssetIn(key=[model.key_prefix, "scores"])},
        group_name=model.key_prefix,
        code_version=version,
        description=description,
        kinds={"delta", "polars"},
    )
    def view(scores: pl.DataFrame) -> pl.DataFrame:
        return compute(scores)

    return view


def score_view_assets(settings: Settings, model: ModelSpec) -> list[dg.AssetsDefinition]:
    bootstrap = {
        "n_boot": settings.summaries.bootstrap_samples,
        "seed": settings.summaries.bootstrap_seed,
    }
    return [
        _view(
            model,
            "score_summary",
            "score-summary-1",
            "Per layer, explainer and simulator: neurons, mean, median and p90 of ev_correlation "
            "on top_and_random of the test split, and the count at or above 0.8 (each neuron's "
            "best sample chosen on the valid split).",
            score_summary,
        ),
        _view(
            model,
            "compare",
            summary_version(settings, "compare-1"),
            "Every pair of explainers (same simulator) on the neurons they share: mean "
            "ev_correlation of each on top_and_random of the test split (each neuron's best "
            "sample chosen on valid), the paired difference with a bootstrap 95% interval, and "
            "how many neurons each wins — the data behind 'larger explainers score higher'.",
            lambda scores: compare_explainers(scores, **bootstrap),
        ),
    ]
