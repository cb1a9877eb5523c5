"""How a refresh plan becomes runs: as few as dependency order allows, never one that reads an
input a later run writes."""

from __future__ import annotations

import dagster as dg

from pipelines.refresh import Step, describe, group_runs
from pipelines.staleness import Node

LAYERS = tuple(str(layer) for layer in range(8))


def key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["m", name])


def node(name: str, *parents: str, partitioned: bool = True) -> Node:
    return Node(
        key=key(name),
        parents=tuple(key(p) for p in parents),
        partitions=LAYERS if partitioned else None,
        code_version="1",
        together=(key(name),),
    )


NODES = {
    n.key: n
    for n in (
        node("records"),
        node("explanations", "records"),
        node("scores", "explanations"),
        node("summary", "scores", partitioned=False),
    )
}


def step(name: str, *layers: str | None) -> Step:
    return Step(keys=(key(name),), due=dict.fromkeys(layers, "stale"))


def runs(*steps: Step) -> list[tuple[list[str], tuple[str, str] | None]]:
    return [([k.path[-1] for k in run.keys], run.partitions) for run in group_runs(steps, NODES)]


def test_a_range_of_layers_is_one_run_and_the_summaries_follow():
    planned = runs(step("explanations", "0", "1"), step("scores", "0", "1"), step("summary", None))
    assert planned == [(["explanations", "scores"], ("0", "1")), (["summary"], None)]


def test_separate_ranges_are_separate_runs_before_what_reads_them_all():
    planned = runs(
        step("records", "0", "1", "5"),
        step("explanations", "0", "1", "5"),
        step("summary", None),
    )
    assert planned == [
        (["records", "explanations"], ("0", "1")),
        (["records", "explanations"], ("5", "5")),
        (["summary"], None),
    ]


def test_an_asset_due_in_other_layers_than_its_input_runs_after_it():
    # explanations are due in layers 0-1, scores in layer 1 only: scores run after, never in a
    # run of layers 0-1 that would rewrite its layer 0.
    planned = runs(step("explanations", "0", "1"), step("scores", "1"))
    assert planned == [(["explanations"], ("0", "1")), (["scores"], ("1", "1"))]
    # Where layers do not overlap, nothing waits: a run of the same range is joined.
    planned = runs(step("records", "0"), step("explanations", "3"), step("scores", "0"))
    assert planned == [(["records", "scores"], ("0", "0")), (["explanations"], ("3", "3"))]


def test_the_plan_describes_layers_by_reason():
    due = {"0": "code version changed", "1": "code version changed", "2": "missing"}
    assert describe(due) == "layers 0, 1 (code version changed); layer 2 (missing)"
    assert describe({None: "follows m/scores"}) == "follows m/scores"
