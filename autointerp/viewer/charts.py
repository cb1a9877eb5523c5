"""The viewer's plots as Vega-Lite specifications, written with Altair and drawn in the browser by
vega-embed (vendored under static/vendor, so nothing is fetched from the network).

Each plot is specified once, over a named dataset (building Altair objects costs about 0.1 s);
a page's spec is that one with the page's rows filled in.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import altair as alt
import polars as pl

from autointerp.score.summary import GOOD_SCORE
from autointerp.viewer.overview import pair_label

Spec = dict[str, Any]
DATA = "rows"
PAIR = alt.Color(
    "pair:N", title="explainer → simulator", legend=alt.Legend(orient="bottom", labelLimit=400)
)


def _with_rows(spec: Spec, frame: pl.DataFrame) -> Spec:
    return {**spec, "datasets": {DATA: frame.to_dicts()}}


@lru_cache(maxsize=4)
def _histograms(faceted: bool, columns: int) -> Spec:
    bars = (
        alt.Chart(alt.NamedData(DATA))
        .mark_bar(opacity=0.75)
        .encode(
            x=alt.X("bin_start:Q", bin="binned", title="score", scale=alt.Scale(domain=[-1, 1])),
            x2="bin_end:Q",
            y=alt.Y("neurons:Q", stack=None, title="neurons"),
            color=PAIR,
            tooltip=["bin_start:Q", "bin_end:Q", "neurons:Q"],
        )
    )
    if not faceted:
        return bars.properties(width=420, height=160).to_dict()
    return (
        bars.properties(width=150, height=90)
        .facet(facet=alt.Facet("layer:O", title="layer"), columns=columns)
        .to_dict()
    )


def score_histograms(histogram: pl.DataFrame, columns: int = 6) -> Spec:
    """One histogram of the chosen test scores per layer (layer, pair, bin_start, bin_end,
    neurons), pairs side by side in colour."""
    return _with_rows(_histograms(histogram["layer"].n_unique() > 1, columns), histogram)


@lru_cache(maxsize=2)
def _curves(shuffled: bool) -> Spec:
    encoding = {
        "x": alt.X("layer:Q", axis=alt.Axis(tickMinStep=1)),
        "y": alt.Y("score:Q", title="mean test score"),
        "color": PAIR,
        "tooltip": ["layer:Q", "pair:N", "measure:N", alt.Tooltip("score:Q", format=".3f")],
    }
    if shuffled:
        encoding["strokeDash"] = alt.StrokeDash(
            "measure:N",
            title="",
            scale=alt.Scale(domain=["mean", "shuffled_mean"], range=[[1, 0], [4, 3]]),
            legend=alt.Legend(
                orient="bottom",
                labelExpr="datum.label == 'mean' ? 'explanations' : "
                "'shuffled explanations (the chance floor)'",
            ),
        )
    base = alt.Chart(alt.NamedData(DATA))
    mean = (
        base.transform_filter("datum.measure != 'count_ge_0_8'")
        .mark_line(point=True)
        .encode(**encoding)
        .properties(width=380, height=200, title="mean score by layer")
    )
    good = (
        base.transform_filter("datum.measure == 'count_ge_0_8'")
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("score:Q", title=f"neurons scoring ≥ {GOOD_SCORE}", axis=alt.Axis(format="d")),
            color=PAIR,
            tooltip=["layer:Q", "pair:N", alt.Tooltip("score:Q", title="neurons")],
        )
        .properties(width=380, height=200, title=f"neurons scoring ≥ {GOOD_SCORE} by layer")
    )
    return alt.hconcat(mean, good).to_dict()


def layer_curves(summary: pl.DataFrame) -> Spec:
    """Mean score by layer (the shuffled-explanation floor dashed beside it, where the summary
    has it) and the count of neurons at or above 0.8, one line per pair."""
    shuffled = "shuffled_mean" in summary.columns
    measures = ["mean", *(["shuffled_mean"] if shuffled else []), "count_ge_0_8"]
    long = summary.select("layer", "pair", *(pl.col(m).cast(pl.Float64) for m in measures)).unpivot(
        index=["layer", "pair"], variable_name="measure", value_name="score"
    )
    return _with_rows(_curves(shuffled), long)


@lru_cache(maxsize=1)
def _depth() -> Spec:
    return (
        alt.Chart(alt.NamedData(DATA))
        .mark_line(point=True)
        .encode(
            x=alt.X("depth:Q", title="relative depth", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("mean:Q", title="mean test score"),
            color=alt.Color("model:N", legend=alt.Legend(orient="bottom")),
            strokeDash=alt.StrokeDash("pair:N", title="explainer → simulator"),
            tooltip=["model:N", "layer:Q", "pair:N", alt.Tooltip("mean:Q", format=".3f")],
        )
        .properties(width=480, height=220)
        .to_dict()
    )


def models_by_depth(summary: pl.DataFrame) -> Spec:
    """Subject models side by side: mean score by relative depth (layer / (layers - 1))."""
    return _with_rows(_depth(), summary)


@lru_cache(maxsize=1)
def _differences() -> Spec:
    base = alt.Chart().encode(
        x=alt.X("depth:N", title="relative depth", sort=None),
        color=alt.Color("model:N", legend=alt.Legend(orient="bottom")),
        xOffset="model:N",
    )
    points = base.mark_point(filled=True, size=60).encode(
        y=alt.Y("diff:Q", title="mean − the reference's (95% CI)"),
        tooltip=[
            "model:N",
            "depth:N",
            alt.Tooltip("diff:Q", format="+.3f"),
            alt.Tooltip("ci_low:Q", format="+.3f"),
            alt.Tooltip("ci_high:Q", format="+.3f"),
        ],
    )
    intervals = base.mark_rule().encode(y="ci_low:Q", y2="ci_high:Q")
    zero = alt.Chart().mark_rule(color="black", strokeWidth=0.8).encode(y=alt.datum(0))
    return (
        alt.layer(intervals, points, zero, data=alt.NamedData(DATA))
        .properties(width=420, height=200)
        .facet(row=alt.Row("pair:N", title=None, header=alt.Header(labelAngle=0)))
        .to_dict()
    )


def model_differences(comparison: pl.DataFrame) -> Spec:
    """Each model's mean score minus the reference's, by relative depth (`all` last), with its
    bootstrap interval, one panel per pair (MODEL_COMPARISON_SCHEMA rows)."""
    rows = comparison.filter(pl.col("diff").is_not_null()).with_columns(pair_label())
    order = pl.col("depth") == "all"
    return _with_rows(
        _differences(),
        rows.sort(order, "depth").select("pair", "model", "depth", "diff", "ci_low", "ci_high"),
    )
