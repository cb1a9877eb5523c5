"""Explainers compared head to head on the neurons they share.

Bills et al. raise scores with larger explainers; whether a new explainer is better is a paired
question (the same neurons, the same simulator), so the comparison is of per-neuron differences,
not of two layer means over different neuron sets. Each neuron counts once per explainer, with
the sample chosen by the project's one rule (`score.selection`), and a neuron whose score is
undefined (NaN) for either explainer is left out of that pair only.

The 95% interval of the mean difference is a percentile bootstrap over neurons, seeded, so the
same scores always give the same interval.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import polars as pl

from autointerp.score.selection import NEURON_KEY, best_samples
from autointerp.score.statistics import bootstrap_mean_interval
from autointerp.storage.schemas import COMPARISON_SCHEMA

SIMULATOR = ("simulator", "simulator_hash")
EXPLAINER = ("explainer", "explainer_hash")


def compare_explainers(
    scores: pl.DataFrame,
    *,
    split: str = "test",
    scored_on: str = "top_and_random",
    n_boot: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per pair of explainer profiles scored by the same simulator profile
    (COMPARISON_SCHEMA), a and b in sorted order, on the ev_correlation of `split` and
    `scored_on` of the neurons both were scored on. Every pair resamples with `seed`, so a
    pair's interval does not depend on which other explainers are in `scores`."""
    best = best_samples(scores, split=split, scored_on=scored_on)
    rows = []
    for (simulator, simulator_hash), by_simulator in best.group_by(SIMULATOR, maintain_order=True):
        explainers = sorted(by_simulator.select(EXPLAINER).unique().iter_rows())
        for a, b in combinations(explainers, 2):
            pair = _paired(by_simulator, a, b)
            both = pair.drop_nulls()
            diffs = (both["a"] - both["b"]).to_numpy()
            low, high = bootstrap_mean_interval(diffs, n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "simulator": simulator,
                    "simulator_hash": simulator_hash,
                    "explainer_a": a[0],
                    "explainer_a_hash": a[1],
                    "explainer_b": b[0],
                    "explainer_b_hash": b[1],
                    "split": split,
                    "scored_on": scored_on,
                    "shared": pair.height,
                    "compared": both.height,
                    "mean_a": both["a"].mean(),
                    "mean_b": both["b"].mean(),
                    "mean_diff": float(diffs.mean()) if len(diffs) else None,
                    "ci_low": low,
                    "ci_high": high,
                    "wins_a": int((diffs > 0).sum()),
                    "wins_b": int((diffs < 0).sum()),
                    "ties": int((diffs == 0).sum()),
                }
            )
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA).sort(
        *SIMULATOR, "explainer_a", "explainer_a_hash", "explainer_b", "explainer_b_hash"
    )


def _paired(best: pl.DataFrame, a: tuple[str, str], b: tuple[str, str]) -> pl.DataFrame:
    """The neurons both explainers were scored on, with each one's score (null when NaN)."""
    neuron = [key for key in NEURON_KEY if key not in EXPLAINER]

    def of(explainer: tuple[str, str], name: str) -> pl.DataFrame:
        chosen = (pl.col("explainer") == explainer[0]) & (pl.col("explainer_hash") == explainer[1])
        return best.filter(chosen).select(*neuron, pl.col("score").alias(name))

    return of(a, "a").join(of(b, "b"), on=neuron, how="inner")


def format_comparison(frame: pl.DataFrame) -> str:
    """The comparison as a table for the terminal, one line per pair."""
    if frame.is_empty():
        return "No two explainers were scored by the same simulator: nothing to compare."
    cells = [
        [
            _label(row["simulator"], row["simulator_hash"]),
            _label(row["explainer_a"], row["explainer_a_hash"]),
            _label(row["explainer_b"], row["explainer_b_hash"]),
            f"{row['compared']}/{row['shared']}",
            _number(row["mean_a"]),
            _number(row["mean_b"]),
            f"{_number(row['mean_diff'], signed=True)} "
            f"[{_number(row['ci_low'], signed=True)}, {_number(row['ci_high'], signed=True)}]",
            str(row["wins_a"]),
            str(row["wins_b"]),
            str(row["ties"]),
        ]
        for row in frame.iter_rows(named=True)
    ]
    header = ["simulator", "explainer a", "explainer b", "neurons", "mean a", "mean b"]
    header += ["a − b [95% CI]", "a wins", "b wins", "ties"]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    left = 3  # the profile columns read better left-aligned, the numbers right-aligned

    def line(values: list[str]) -> str:
        return "  ".join(
            value.ljust(width) if i < left else value.rjust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        )

    first = frame.row(0, named=True)
    return "\n".join(
        [
            line(header),
            "-" * len(line(header)),
            *(line(values) for values in cells),
            f"ev_correlation on {first['split']} / {first['scored_on']}, each neuron with its "
            "sample chosen on valid. neurons: both scores defined / both scored.",
            "a − b: mean paired difference, with a bootstrap 95% interval over neurons.",
        ]
    )


def _label(name: str, profile_hash: str) -> str:
    return f"{name}@{profile_hash[:6]}"


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def why_no_comparison(scores: pl.DataFrame) -> str:
    """Why `compare_explainers` found no pair: what each simulator scored."""
    scored = scores.select("simulator", "explainer").unique().group_by("simulator").agg("explainer")
    if scored.is_empty():
        return "no scores yet"
    held = "; ".join(
        f"{simulator}: {', '.join(sorted(explainers))}"
        for simulator, explainers in sorted(scored.iter_rows())
    )
    return (
        f"a comparison needs two explainer profiles scored by one simulator; the scores hold "
        f"{held}. Add a second explainer to [pipeline] explainers and refresh."
    )
