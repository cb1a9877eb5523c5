"""The score stage's honesty: calibration never changes a correlation, unanswered positions are
left out, one rule picks the sample that counts, and the chance floor sits beside the scores."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from autointerp.activations.excerpts import neuron_excerpts
from autointerp.config.profiles import load_profiles
from autointerp.explain.explanations import explain
from autointerp.score.calibration import fit_linear_calibration
from autointerp.score.compare import compare_explainers
from autointerp.score.floor import shuffled_explanations, shuffled_scores
from autointerp.score.scores import score
from autointerp.score.selection import chosen_samples, selection_split
from autointerp.score.summary import score_summary
from autointerp.simulate.simulations import simulate
from autointerp.storage.schemas import SCORES_SCHEMA
from autointerp.testing.tables import simulations_frame
from tests.test_stages import make_inputs

LENGTH = 8


def simulations(predict) -> pl.DataFrame:
    """Two neurons' simulations, 5 top + 5 random excerpts per scoring split; `predict(true,
    split)` gives the expected activations."""
    rng = np.random.default_rng(0)
    rows = []
    for neuron in range(2):
        for split in ("calibration", "valid", "test"):
            for kind in ("top", "random"):
                for rank in range(5):
                    true = rng.gamma(1.0, 2.0, LENGTH)
                    rows.append(
                        {
                            "layer": 0,
                            "neuron": neuron,
                            "explainer": "e",
                            "explainer_hash": "h",
                            "simulator": "s",
                            "simulator_hash": "k",
                            "sample": 0,
                            "excerpt_id": 100 * neuron + 10 * rank + (kind == "random"),
                            "split": split,
                            "kind": kind,
                            "true_activations": true.tolist(),
                            "expected_activations": predict(true, split),
                        }
                    )
    return simulations_frame(pl.DataFrame(rows).to_dict(as_series=False))


def test_calibration_never_flips_or_changes_a_correlation():
    # On calibration the explanation predicts the opposite; elsewhere it is right.
    frame = simulations(
        lambda true, split: (10 - true if split == "calibration" else true + 1).tolist()
    )
    raw, calibrated = score(frame, calibrate=False), score(frame, calibrate=True)
    assert calibrated["ev_correlation"].to_list() == raw["ev_correlation"].to_list()
    valid = calibrated.filter((pl.col("split") == "valid") & (pl.col("scored_on") == "top"))
    assert valid["calibrated"].all() and (valid["ev_correlation"] > 0.99).all()
    # The slope is clamped at 0: an opposite explanation is scaled to a constant, not flipped.
    fitted = fit_linear_calibration([[1.0, 2.0, 3.0]], [[9.0, 5.0, 1.0]])
    assert fitted.slope == 0 and fitted.intercept == pytest.approx(2.0)


def test_unanswered_positions_are_left_out_of_the_pooled_vectors():
    def predict(true, split):
        values = (true * 2).tolist()
        values[3] = None
        return values

    frame = simulations(predict)
    scores = score(frame, calibrate=False).filter(
        (pl.col("scored_on") == "top") & (pl.col("split") == "test") & (pl.col("neuron") == 0)
    )
    row = scores.row(0, named=True)
    assert (row["tokens"], row["missing_tokens"]) == (5 * (LENGTH - 1), 5)
    assert row["ev_correlation"] == pytest.approx(1.0)  # the answered positions are exact


def scores_frame(rows: list[tuple[int, int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "layer": 1,
                "neuron": neuron,
                "explainer": "e",
                "explainer_hash": "h",
                "simulator": "s",
                "simulator_hash": "k",
                "sample": sample,
                "scored_on": "top_and_random",
                "split": split,
                "ev_correlation": value,
                "rsquared": 0.5,
                "absolute_dev_explained": 0.4,
                "excerpt_ids": [],
                "tokens": 9,
                "missing_tokens": 1,
                "calibrated": split == "test" and neuron == 0,
            }
            for neuron, sample, split, value in rows
        ],
        schema=SCORES_SCHEMA,
    )


def test_one_rule_picks_the_sample_and_no_split_both_picks_and_reports():
    scores = scores_frame(
        [
            (0, 0, "calibration", 0.2),
            (0, 0, "valid", 0.9),
            (0, 0, "test", 0.5),
            (0, 1, "calibration", 0.8),
            (0, 1, "valid", 0.1),
            (0, 1, "test", 0.95),
        ]
    )
    assert selection_split("test") == "valid" and selection_split("valid") == "calibration"
    assert chosen_samples(scores, reported="test")["sample"].to_list() == [0]
    assert chosen_samples(scores, reported="valid")["sample"].to_list() == [1]
    on_valid = compare_explainers(scores, split="valid")  # one explainer: nothing to pair
    assert on_valid.is_empty()
    # Scores of the test split only (an imported simulator's): the first sample counts.
    published = scores_frame([(1, 1, "test", 0.9), (1, 0, "test", 0.3), (1, 2, "test", 0.95)])
    chosen = chosen_samples(published, reported="test")
    assert chosen["sample"].to_list() == [0] and chosen["selection_score"].to_list() == [None]
    assert chosen_samples(pl.concat([scores, published]))["sample"].to_list() == [0, 0]


def test_summary_reports_missing_share_and_scale_scores_only_where_calibrated():
    scores = scores_frame(
        [(n, 0, split, 0.3 * (n + 1)) for n in range(2) for split in ("valid", "test")]
    )
    row = score_summary(scores).row(0, named=True)
    assert row["missing_share"] == pytest.approx(0.1)
    assert row["mean_rsquared"] == pytest.approx(0.5)  # neuron 0 only: neuron 1 uncalibrated
    assert row["shuffled_mean"] is None  # no floor given


def test_the_chance_floor_scores_each_neuron_with_another_neurons_explanation():

    corpus, top_k = make_inputs()
    excerpts = neuron_excerpts(top_k, corpus)
    profiles = load_profiles({})
    explanations, _ = explain(
        profiles.explainer("token-statistics-baseline"), excerpts, client=None
    )
    shuffled = shuffled_explanations(explanations, "all", seed=0)
    assert (shuffled["source_neuron"] != shuffled["neuron"]).all()
    lexical = profiles.simulator("lexical-baseline")
    floor, calls = shuffled_scores(
        lexical, explanations, excerpts, neuron_sample="all", seed=0, client=None
    )
    assert calls == [] and set(floor["split"]) == {"test"}
    real = score(simulate(lexical, explanations, excerpts, client=None)[0], calibrate=False)
    summary = score_summary(real, floor).row(0, named=True)
    assert summary["shuffled_neurons"] >= 3
    assert summary["shuffled_mean"] < summary["mean"] - 0.5  # far below explanations that fit
