"""The summary of revision rounds (`revision_summary`): per layer and round, what changed."""

from __future__ import annotations

import polars as pl

from autointerp.score.statistics import bootstrap_mean_interval
from autointerp.storage.schemas import REVISION_SUMMARY_SCHEMA


def revision_summary(rounds: pl.DataFrame, *, seed: int = 0, samples: int = 2000) -> pl.DataFrame:
    """Per layer, profiles and round (rounds: REVISIONS_SCHEMA rows of any rounds): neurons,
    the share whose candidate was kept, the mean reported score (test, top_and_random) after
    and before the round, the share of neurons whose reported score rose, and the mean change
    with a seeded bootstrap 95% interval. Means and shares are over neurons whose scores are
    defined (`scored`)."""
    group = ["layer", "explainer", "explainer_hash", "simulator", "simulator_hash", "round"]
    rows = []
    for key, part in rounds.sort(*group, "neuron").group_by(group, maintain_order=True):
        both = part.select(
            after=pl.col("reported_score").fill_nan(None),
            before=pl.col("previous_reported_score").fill_nan(None),
        ).drop_nulls()
        change = (both["after"] - both["before"]).to_numpy()
        interval = (
            bootstrap_mean_interval(change, n_boot=samples, seed=seed) if change.size else None
        )
        rows.append(
            dict(zip(group, key, strict=True))
            | {
                "neurons": part.height,
                "kept": float(part["kept"].mean()),
                "scored": both.height,
                "mean_score": both["after"].mean(),
                "mean_previous_score": both["before"].mean(),
                "improved": float((change > 0).mean()) if change.size else None,
                "mean_change": float(change.mean()) if change.size else None,
                "change_low": interval[0] if interval else None,
                "change_high": interval[1] if interval else None,
            }
        )
    return pl.DataFrame(rows, schema=REVISION_SUMMARY_SCHEMA)
