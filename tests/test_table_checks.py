"""Data checks: the core functions, and blocking asset checks in a real run."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

import assets.explanations
from autointerp.storage.delta import read_table, table_version
from autointerp.table_checks import (
    empty_explanations,
    missing_neurons,
    out_of_range_scores,
    unscored_neurons,
)
from pipelines.cli import main


def test_empty_explanations_are_found():
    frame = pl.DataFrame(
        {
            "layer": [0, 0, 0],
            "neuron": [1, 2, 3],
            "explanation": ["the word king", "  ", None],
            "error": [None, None, "timeout"],
        }
    )
    assert empty_explanations(frame) == ["1 rows without an error have an empty explanation: 0/2"]


def test_missing_neurons_are_listed_per_profile():
    frame = pl.DataFrame({"layer": [0, 0], "neuron": [0, 1], "explainer": ["a", "a"]})
    expected = {"a": [(0, 0), (0, 1), (0, 2)], "b": [(0, 0)]}
    assert missing_neurons(frame, expected, "explainer") == [
        "1 neurons have no row for explainer 'a': 0/2",
        "1 neurons have no row for explainer 'b': 0/0",
    ]


def test_scores_out_of_range_or_unexplained_nan():
    frame = pl.DataFrame(
        {
            "layer": [0, 0, 0, 0],
            "neuron": [0, 1, 2, 3],
            "ev_correlation": [0.5, 1.5, float("nan"), float("nan")],
            "undefined_reason": [None, None, "constant true activations", None],
        }
    )
    assert out_of_range_scores(frame) == [
        "1 scores outside [-1, 1]: 0/1",
        "1 NaN scores without a reason: 0/3",
    ]


def check_evaluations(home) -> dict[str, bool]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        found = {}
        for run in instance.get_runs():
            records = instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            ).records
            for record in records:
                data = record.event_log_entry.dagster_event.event_specific_data
                found[data.check_name] = data.passed
        return found


def test_checks_run_and_a_failing_one_blocks_downstream(tiny_env, monkeypatch):
    main(["run", "--layers", "0", "--excerpts", "40"])
    assert check_evaluations(tiny_env / "home") == {
        "no_empty_explanations": True,
        "every_neuron_explained": True,
        "scores_in_range": True,
        "every_explanation_scored": True,
        "up_to_date": True,  # the workbench's staleness check (a warning), after the run
    }
    explanations = str(tiny_env / "home/delta/tiny/explanations")
    version, rows = table_version(explanations), read_table(explanations)
    monkeypatch.setattr(assets.explanations, "empty_explanations", lambda _: ["broken"])
    with pytest.raises(SystemExit, match=r"blocking asset check failed.*no_empty_explanations"):
        main(["run", "--layers", "0", "--excerpts", "40"])
    # The check ran on the frame before it was written: the table is as it was.
    assert table_version(explanations) == version
    assert read_table(explanations).equals(rows)
    with dg.DagsterInstance.from_config(str(tiny_env / "home/dagster")) as instance:
        last = instance.get_runs(limit=1)[0]
        steps = {
            r.event_log_entry.dagster_event.step_key
            for r in instance.get_records_for_run(
                last.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS
            ).records
        }
    # The check failed the explain step, so nothing downstream of it ran.
    assert "tiny__top_k_excerpts" in steps and not steps & {"tiny__explain", "tiny__simulate"}


def test_unscored_neurons_agree_with_the_error_fraction():
    explained = pl.DataFrame(
        {"layer": [0] * 4, "neuron": [0, 1, 2, 3], "explainer": ["a"] * 4, "error": [None] * 4}
    )
    scored = explained.filter(pl.col("neuron") < 3).select("layer", "neuron", "explainer")
    failed = pl.DataFrame({"layer": [0], "neuron": [3], "explainer": ["a"], "error": ["HTTP 500"]})
    # One neuron of four unscored because its simulations failed: within 25%, not within 20%.
    assert unscored_neurons(scored, explained, failed, 0.25) == []
    assert unscored_neurons(scored, explained, failed, 0.2) == [
        "1 of 4 explained neurons are unscored because their simulations failed, more than "
        "max_error_fraction = 20%"
    ]
    # A neuron unscored with no failed simulation is a bug, whatever the fraction.
    assert unscored_neurons(scored, explained, failed.head(0), 1.0) == [
        "1 usable explanations have no score and no failed simulation: 0/3"
    ]
