"""Refresh: the plan that brings a model's graph up to date, shared by `autointerp refresh`, the
code location's `<model>_refresh` job and the `up_to_date` checks the UI shows.

The plan walks the graph in dependency order, one execution set (an asset, or every output of a
multi-asset) at a time. A partition is due when it is stale (`pipelines.staleness`), missing while
every input it reads exists (a layer never captured stays for `autointerp run`: its corpus
existing is no reason to capture it), or downstream of a partition the plan recomputes: Dagster's
staleness is not transitive, so what an upstream recompute will make stale is planned up front.

The due partitions become as few runs as dependency order allows: an execution set joins a run
of the same layer range that comes at or after every run of its inputs, so a refresh of several
assets over a range of layers is one run (one forward pass where one is needed); a list such as
0,5 becomes a run per contiguous range; the unpartitioned summaries follow in a run of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from pipelines.staleness import Materializations, Node, graph_nodes, partitions_of, stale_causes

Range = tuple[str, str]


@dataclass(frozen=True)
class Step:
    """One execution set and the partitions of it that are due, each with why."""

    keys: tuple[dg.AssetKey, ...]
    due: Mapping[str | None, str]  # partition (None: the whole asset) -> reason

    @property
    def name(self) -> str:
        return ", ".join(key.to_user_string() for key in self.keys)


@dataclass
class PlannedRun:
    """One Dagster run of the plan: assets over one range of layers (None: unpartitioned)."""

    keys: list[dg.AssetKey]
    partitions: Range | None


@dataclass
class Plan:
    steps: list[Step]  # every execution set, in dependency order; those in sync have no due
    runs: list[PlannedRun] = field(default_factory=list)
    never_materialized: set[dg.AssetKey] = field(default_factory=set)

    @property
    def due(self) -> dict[dg.AssetKey, dict[str | None, str]]:
        """Each asset with due partitions -> {partition: reason}."""
        return {key: dict(step.due) for step in self.steps if step.due for key in step.keys}

    def pairs(self) -> set[tuple[dg.AssetKey, str | None]]:
        """Every (asset, partition) the plan recomputes."""
        return {(key, p) for key, due in self.due.items() for p in due}

    def lines(self) -> list[str]:
        """What is out of date and why, then what is in sync: for a terminal or a log."""
        out = [f"out of date {step.name}: {describe(step.due)}" for step in self.steps if step.due]
        for step in self.steps:
            if not step.due:
                never = set(step.keys) <= self.never_materialized
                out.append(f"skipped {step.name}: {'never materialized' if never else 'in sync'}")
        return out


def describe(due: Mapping[str | None, str]) -> str:
    """{'0': 'code version changed', '1': ...} -> 'layers 0, 1 (code version changed)'."""
    by_reason: dict[str, list[str]] = {}
    for partition, reason in due.items():
        by_reason.setdefault(reason, []).append(partition)
    parts = []
    for reason, partitions in by_reason.items():
        if partitions == [None]:
            parts.append(reason)
        else:
            label = "layer" if len(partitions) == 1 else "layers"
            parts.append(f"{label} {', '.join(str(p) for p in partitions)} ({reason})")
    return "; ".join(parts)


def plan_refresh(instance: dg.DagsterInstance, assets: Iterable[dg.AssetsDefinition]) -> Plan:
    """What is due in the graph of `assets`, read afresh from `instance`."""
    nodes = graph_nodes(assets)
    state = Materializations(instance, nodes)
    steps: list[Step] = []
    # (asset, partition) -> the inputs the plan recomputes that it reads
    follows: dict[tuple[dg.AssetKey, str | None], set[str]] = {}
    seen: set[dg.AssetKey] = set()
    for key, node in nodes.items():
        if key in seen:
            continue
        seen.update(node.together)
        due: dict[str | None, str] = {}
        for member in node.together:
            for partition in partitions_of(nodes[member]):
                reason = _own_reason(state, member, partition)
                if not reason and (member, partition) in follows:
                    reason = "follows " + ", ".join(sorted(follows[(member, partition)]))
                if reason:
                    due.setdefault(partition, reason)
        for member in node.together:
            for child in _children(nodes, member):
                for partition in due:
                    for target in _child_partitions(nodes[child], partition):
                        follows.setdefault((child, target), set()).add(member.to_user_string())
        steps.append(Step(keys=node.together, due=_ordered(due, nodes[key])))
    plan = Plan(
        steps=steps,
        never_materialized={key for key in nodes if not state.materialized(key)},
    )
    plan.runs = group_runs(steps, nodes)
    return plan


def _own_reason(state: Materializations, key: dg.AssetKey, partition: str | None) -> str | None:
    """Why this partition is due on its own account: stale, or missing where its inputs are."""
    if state.exists(key, partition):
        causes = stale_causes(state, key, partition)
        return "; ".join(causes) if causes else None
    node = state.nodes[key]
    if not node.parents:
        return None
    same_partition = False
    for parent in node.parents:
        upstream = state.nodes.get(parent)
        if upstream is None or upstream.partitions is None:
            exists = state.exists(parent, None)
        elif partition is None:  # an unpartitioned view of a partitioned input
            exists = state.materialized(parent)
            same_partition = same_partition or exists
        else:
            exists = state.exists(parent, partition)
            same_partition = same_partition or exists
        if not exists:
            return None
    return "missing" if same_partition else None


def _children(nodes: Mapping[dg.AssetKey, Node], key: dg.AssetKey) -> list[dg.AssetKey]:
    return [child for child, node in nodes.items() if key in node.parents]


def _child_partitions(child: Node, partition: str | None) -> Sequence[str | None]:
    """The partitions of `child` that read `partition` of its input."""
    if child.partitions is None:
        return [None]
    return child.partitions if partition is None else [partition]


def _ordered(due: Mapping[str | None, str], node: Node) -> dict[str | None, str]:
    return {p: due[p] for p in partitions_of(node) if p in due}


def contiguous(partitions: Sequence[str], order: Sequence[str]) -> list[Range]:
    """A run covers a range of partitions: ['0','1','2','7'] -> [('0','2'), ('7','7')]."""
    positions = sorted(order.index(p) for p in partitions)
    ranges: list[list[int]] = []
    for position in positions:
        if ranges and ranges[-1][1] == position - 1:
            ranges[-1][1] = position
        else:
            ranges.append([position, position])
    return [(order[low], order[high]) for low, high in ranges]


def group_runs(steps: Sequence[Step], nodes: Mapping[dg.AssetKey, Node]) -> list[PlannedRun]:
    """The due steps as few runs as dependency order allows (see the module's docstring)."""
    runs: list[PlannedRun] = []
    placed: dict[dg.AssetKey, list[int]] = {}
    for step in steps:
        if not step.due:
            continue
        node = nodes[step.keys[0]]
        ranges: list[Range | None] = (
            contiguous([p for p in step.due if p is not None], node.partitions)
            if node.partitions is not None
            else [None]
        )
        parents = {p for key in step.keys for p in nodes[key].parents if p in placed}
        for span in ranges:
            earliest = 0
            for parent in parents:
                for index in placed[parent]:
                    before = runs[index].partitions
                    if span is not None and before is not None and not _overlap(span, before, node):
                        continue  # another range of layers: no dependency
                    earliest = max(earliest, index if before == span else index + 1)
            target = next(
                (i for i in range(earliest, len(runs)) if runs[i].partitions == span), None
            )
            if target is None:
                runs.append(PlannedRun(keys=[], partitions=span))
                target = len(runs) - 1
            runs[target].keys.extend(step.keys)
            for key in step.keys:
                placed.setdefault(key, []).append(target)
    return runs


def _overlap(a: Range, b: Range, node: Node) -> bool:
    order = node.partitions or ()
    return order.index(a[0]) <= order.index(b[1]) and order.index(b[0]) <= order.index(a[1])


Materialize = Callable[[list[dg.AssetKey], Range | None], None]


def execute(plan: Plan, materialize: Materialize) -> None:
    """Run the plan's runs in order; `materialize(keys, layer_range)` runs one."""
    for run in plan.runs:
        materialize(run.keys, run.partitions)
