"""Views over every layer's scores (unpartitioned): score_summary and compare."""

from collections.abc import Callable, Mapping, Sequence

import dagster as dg
import polars as pl

from assets.common import summary_version, table_output, table_preview
from autointerp.config.settings import ModelSpec, Settings
from autointerp.score.compare import compare_explainers, why_no_comparison
from autointerp.score.summary import score_summary


def _view(
    model: ModelSpec,
    name: str,
    version: str,
    description: str,
    inputs: Mapping[str, Sequence[str] | None],
    compute: Callable[..., pl.DataFrame],
    why_empty: Callable[..., str] | None = None,
) -> dg.AssetsDefinition:
    """`inputs`: each table the view reads, with the columns it needs (None: every column); a
    view reads every layer, so a table with per-token columns is read without them."""

    @dg.asset(
        key=[model.key_prefix, name],
        ins={
            table: dg.AssetIn(
                key=[model.key_prefix, table],
                metadata={"columns": list(columns)} if columns else None,
            )
            for table, columns in inputs.items()
        },
        group_name=model.key_prefix,
        code_version=version,
        description=description,
        kinds={"delta", "polars"},
    )
    def view(context: dg.AssetExecutionContext, **tables: pl.DataFrame) -> dg.Output:
        frame = compute(**tables)
        metadata = {"preview": table_preview(frame, 100)}
        if frame.is_empty() and why_empty:
            metadata["why_empty"] = why_empty(**tables)
        return table_output(context, frame, metadata=metadata)

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
            "score-summary-3",
            "Per layer, explainer and simulator, on top_and_random of the test split: neurons, "
            "mean, median and p90 of ev_correlation and the count at or above 0.8 (each "
            "neuron's sample chosen on the valid split), beside the chance floor of shuffled "
            "explanations, the share of tokens the simulator left unanswered, and rsquared and "
            "absolute deviation explained where predictions were calibrated; and how many "
            "explained neurons it leaves out (dropped) and why (dropped_why).",
            {
                "scores": None,
                "shuffled_scores": None,
                # What `dropped_neurons` reads of them.
                "explanations": ("layer", "neuron", "explainer", "error"),
                "simulations": ("layer", "neuron", "explainer", "simulator", "split", "error"),
            },
            lambda scores, shuffled_scores, explanations, simulations: score_summary(
                scores, shuffled_scores, explanations, simulations
            ),
        ),
        _view(
            model,
            "compare",
            summary_version(settings, "compare-2"),
            "Every pair of explainers (same simulator) on the neurons they share: mean "
            "ev_correlation of each on top_and_random of the test split (each neuron's best "
            "sample chosen on valid), the paired difference with a bootstrap 95% interval, and "
            "how many neurons each wins — the data behind 'larger explainers score higher'.",
            {"scores": None},
            lambda scores: compare_explainers(scores, **bootstrap),
            why_no_comparison,
        ),
    ]
