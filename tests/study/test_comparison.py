"""Models side by side: distributions per relative depth, dead and undefined shares, the
difference from the reference with its interval, and refusals of unfair comparisons."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from autointerp.errors import InputError
from autointerp.storage.schemas import SCORES_SCHEMA
from autointerp.study.comparison import ModelResults, compare_models, comparison_table

NAN = float("nan")


def model(
    name: str,
    by_layer: list[list[float]],
    *,
    maxima: list[list[float]] | None = None,
    explainer: str = "e",
    excerpts: int = 10,
) -> ModelResults:
    """A model whose neuron n of layer l scored by_layer[l][n] on test (0.5 on valid and
    calibration)."""
    rows, records = [], []
    for layer, scores in enumerate(by_layer):
        for neuron, score in enumerate(scores):
            common = {
                "layer": layer,
                "neuron": neuron,
                "explainer": explainer,
                "explainer_hash": f"{explainer}-h",
                "simulator": "s",
                "simulator_hash": "s-h",
                "sample": 0,
                "scored_on": "top_and_random",
                "excerpt_ids": list(range(excerpts)),
            }
            rows += [
                {**common, "split": "test", "ev_correlation": score},
                {**common, "split": "valid", "ev_correlation": 0.5},
                {**common, "split": "calibration", "ev_correlation": 0.5},
            ]
            peak = maxima[layer][neuron] if maxima else 1.0
            records.append({"layer": layer, "neuron": neuron, "max_activation": peak})
    scores = pl.DataFrame(rows, schema={k: SCORES_SCHEMA[k] for k in rows[0]})
    return ModelResults(name, len(by_layer), scores, pl.DataFrame(records))


def with_floor(results: ModelResults, by_layer: list[list[float]]) -> ModelResults:
    """`results` with chance-floor scores: by_layer[l] on layer l's test excerpts (top and
    random; a top-only row of 0.99 too, which the comparison must not count)."""
    floor = model(results.name, by_layer).scores.filter(pl.col("split") == "test")
    top = floor.with_columns(scored_on=pl.lit("top"), ev_correlation=pl.lit(0.99))  # not counted
    return ModelResults(
        results.name, results.num_layers, results.scores, results.records, pl.concat([floor, top])
    )


def row(frame: pl.DataFrame, model_name: str, depth: str) -> dict:
    return frame.filter((pl.col("model") == model_name) & (pl.col("depth") == depth)).row(
        0, named=True
    )


def test_distribution_per_depth_with_dead_and_undefined_shares():
    a = model(
        "a",
        [[0.9, 0.6, 0.2, NAN], [0.85, 0.1, 0.55, 0.3]],
        maxima=[[1.0, 2.0, 0.5, 0.0], [1.0, -0.1, 1.0, 1.0]],
    )
    b = model("b", [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]])
    frame = compare_models([a, b], reference="a", depth_bins=2, n_boot=200)
    assert frame["depth"].to_list() == ["all", "0.00-0.50", "0.50-1.00"] * 2
    first = row(frame, "a", "0.00-0.50")
    assert first["layers"] == "0" and first["neurons"] == 4 and first["scored"] == 3
    assert first["undefined_share"] == pytest.approx(0.25)
    assert first["dead_share"] == pytest.approx(0.25)  # max 0: never fires
    assert first["mean"] == pytest.approx((0.9 + 0.6 + 0.2) / 3)
    assert first["median"] == pytest.approx(0.6)
    assert first["share_ge_0_5"] == pytest.approx(2 / 3)
    assert first["share_ge_0_8"] == pytest.approx(1 / 3)
    overall = row(frame, "a", "all")
    assert overall["layers"] == "0-1" and overall["neurons"] == 8 and overall["scored"] == 7
    assert overall["dead_share"] == pytest.approx(2 / 8)
    assert overall["diff"] is None and overall["ci_low"] is None  # the reference itself


def test_the_difference_from_the_reference_has_a_bootstrap_interval():
    rng = np.random.default_rng(0)
    a = model("a", [list(rng.uniform(0.2, 0.6, 200))])
    b = model("b", [list(rng.uniform(0.4, 0.8, 200))])
    c = model("c", [list(rng.uniform(0.0, 1.0, 200))])
    frame = compare_models([a, b], reference="a", depth_bins=1, n_boot=500)
    got = row(frame, "b", "all")
    assert got["diff"] == pytest.approx(got["mean"] - row(frame, "a", "all")["mean"])
    assert 0.1 < got["ci_low"] < got["diff"] < got["ci_high"] < 0.3
    # The same seed gives the same interval, whichever other models are compared.
    again = compare_models([a, c, b], reference="a", depth_bins=1, n_boot=500)
    assert row(again, "b", "all")["ci_low"] == got["ci_low"]
    assert comparison_table(frame)["− reference [95% CI]"].to_list() == [
        "reference",
        "reference",
        f"+{got['diff']:.3f} [+{got['ci_low']:.3f}, +{got['ci_high']:.3f}]",
        f"+{got['diff']:.3f} [+{got['ci_low']:.3f}, +{got['ci_high']:.3f}]",
    ]


def test_models_of_different_depths_line_up_by_relative_depth():
    shallow = model("shallow", [[0.1] * 3, [0.9] * 3])
    deep = model("deep", [[0.2] * 3, [0.3] * 3, [0.7] * 3, [0.8] * 3])
    frame = compare_models([shallow, deep], reference="shallow", depth_bins=2, n_boot=100)
    assert row(frame, "deep", "0.00-0.50")["layers"] == "0-1"
    assert row(frame, "deep", "0.00-0.50")["diff"] == pytest.approx(0.25 - 0.1)
    assert row(frame, "deep", "0.50-1.00")["diff"] == pytest.approx(0.75 - 0.9)


def test_each_neuron_counts_once_with_the_sample_chosen_on_valid():
    a = model("a", [[0.2, 0.2]])
    better = a.scores.filter(pl.col("neuron") == 0).with_columns(
        sample=pl.lit(1, pl.Int32),
        ev_correlation=pl.when(pl.col("split") == "valid").then(0.9).otherwise(0.6),
    )
    a = ModelResults("a", 1, pl.concat([a.scores, better]), a.records)
    frame = compare_models([a, model("b", [[0.0, 0.0]])], reference="b", depth_bins=1, n_boot=50)
    assert row(frame, "a", "all")["neurons"] == 2
    assert row(frame, "a", "all")["mean"] == pytest.approx((0.6 + 0.2) / 2)


def test_unfair_or_impossible_comparisons_are_refused():
    a, b = model("a", [[0.5]]), model("b", [[0.5]])
    with pytest.raises(InputError, match="different numbers of excerpts"):
        compare_models([a, model("b", [[0.5]], excerpts=6)], reference="a", depth_bins=1)
    with pytest.raises(InputError, match="no explainer and simulator profile pair"):
        compare_models([a, model("b", [[0.5]], explainer="f")], reference="a", depth_bins=1)
    with pytest.raises(InputError, match="reference model 'c'"):
        compare_models([a, b], reference="c", depth_bins=1)
    with pytest.raises(InputError, match="at least two"):
        compare_models([a], reference="a", depth_bins=1)
    # Profiles that scored only some of the models are left out, not compared.
    both = ModelResults(
        "b", 1, pl.concat([b.scores, model("b", [[0.1]], explainer="f").scores]), b.records
    )
    frame = compare_models([a, both], reference="a", depth_bins=1, n_boot=10)
    assert set(frame["explainer"]) == {"e"} and not math.isnan(frame["mean"][0])


def test_each_model_s_chance_floor_stands_beside_its_scores():
    a = with_floor(model("a", [[0.9, 0.7], [0.8, 0.6]]), [[0.1, 0.3], [0.2, NAN]])
    b = model("b", [[0.5, 0.5], [0.5, 0.5]])  # its floor was never scored
    frame = compare_models([a, b], reference="a", depth_bins=2, n_boot=50)
    assert row(frame, "a", "all")["floor_mean"] == pytest.approx(0.2)
    assert row(frame, "a", "0.00-0.50")["floor_mean"] == pytest.approx(0.2)
    assert row(frame, "a", "0.50-1.00")["floor_mean"] == pytest.approx(0.2)  # NaN left out
    assert row(frame, "b", "all")["floor_mean"] is None
    assert comparison_table(frame)["floor"].to_list()[:3] == [0.2, 0.2, 0.2]
    # On the valid split there is no floor (it is scored on test only).
    valid = compare_models([a, b], reference="a", depth_bins=2, split="valid", n_boot=50)
    assert valid["floor_mean"].null_count() == valid.height
