"""Refresh: materialize, in dependency order and per partition, everything unsynced or missing.

Dagster's staleness is not transitive: a downstream turns stale only once its upstream has been
rematerialized. So the graph is walked in topological order, one execution set (an asset, or all
outputs of a multi-asset) at a time, and each set's status is read afresh after the sets before
it ran. A partition is refreshed when it is stale (its code version or an upstream data version
changed), or missing while every upstream partition it reads exists; a root that was never
materialized is left alone (that is `autointerp run`'s job). Layers of one contiguous range run
together, so a refresh of several layers still makes one forward pass where one is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.temporal_context import TemporalContext
from dagster._time import get_current_datetime

Materialize = Callable[[list[dg.AssetKey], tuple[str, str] | None], None]


@dataclass
class RefreshReport:
    recomputed: dict[str, list[str]] = field(default_factory=dict)  # asset -> partitions
    skipped: dict[str, str] = field(default_factory=dict)  # asset -> why

    def lines(self) -> list[str]:
        out = [
            f"recomputed {key}: {', '.join(parts) or 'all'}"
            for key, parts in self.recomputed.items()
        ]
        out += [f"skipped {key}: {why}" for key, why in self.skipped.items()]
        return out


def _resolver(instance: dg.DagsterInstance, graph: AssetGraph) -> CachingStaleStatusResolver:
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=graph, loading_context=view)


def stale_statuses(
    instance: dg.DagsterInstance, assets: Sequence[dg.AssetsDefinition]
) -> dict[dg.AssetKey, dict[str | None, StaleStatus]]:
    """Dagster's view of every asset partition: FRESH, STALE (unsynced) or MISSING."""
    graph = AssetGraph.from_assets(assets)
    resolver = _resolver(instance, graph)
    return {
        key: {p: resolver.get_status(key, p) for p in _partition_keys(graph, key)}
        for key in graph.toposorted_asset_keys
    }


def _partition_keys(graph: AssetGraph, key: dg.AssetKey) -> list[str | None]:
    partitions = graph.get(key).partitions_def
    return list(partitions.get_partition_keys()) if partitions else [None]


def _needs_refresh(
    resolver: CachingStaleStatusResolver, graph: AssetGraph, key: dg.AssetKey, partition: str | None
) -> str | None:
    """Why `partition` of `key` needs materializing ("stale", "missing"), or None.

    A missing partition is filled in only where the run that made its upstream left off: every
    parent exists, and a partitioned parent exists for this very partition. So a layer never
    captured stays for `autointerp run`; its corpus existing is not a reason to capture it.
    """
    status = resolver.get_status(key, partition)
    if status == StaleStatus.STALE:
        return "stale"
    parents = graph.get(key).parent_keys
    if status != StaleStatus.MISSING or not parents:
        return None
    same_partition = False
    for parent in parents:
        if graph.get(parent).partitions_def is None:
            exists = resolver.get_status(parent, None) != StaleStatus.MISSING
        elif partition is None:  # an unpartitioned view of a partitioned parent
            exists = _materialized(resolver, graph, parent)
            same_partition = same_partition or exists
        else:
            exists = resolver.get_status(parent, partition) != StaleStatus.MISSING
            same_partition = same_partition or exists
        if not exists:
            return None
    return "missing" if same_partition else None


def contiguous(partitions: Sequence[str], order: Sequence[str]) -> list[tuple[str, str]]:
    """A run covers a range of partitions: ['0','1','2','7'] -> [('0','2'), ('7','7')]."""
    positions = sorted(order.index(p) for p in partitions)
    ranges: list[list[int]] = []
    for position in positions:
        if ranges and ranges[-1][1] == position - 1:
            ranges[-1][1] = position
        else:
            ranges.append([position, position])
    return [(order[low], order[high]) for low, high in ranges]


def _plan(
    resolver: CachingStaleStatusResolver, graph: AssetGraph
) -> list[tuple[list[dg.AssetKey], dict[str | None, str]]]:
    """Each execution set in dependency order, with the partitions it needs and why.

    Staleness is not transitive, so what an upstream refresh will make stale is added here:
    a partition refreshed upstream makes the same partition of a partitioned child, and an
    unpartitioned child as a whole, due for refresh too ("upstream").
    """
    plan, due, seen = [], {}, set()
    for key in graph.toposorted_asset_keys:
        if key in seen:
            continue
        together = sorted(graph.get(key).execution_set_asset_keys, key=lambda k: k.path)
        seen.update(together)
        wanted: dict[str | None, str] = {}
        for member in together:
            for partition in _partition_keys(graph, member):
                reason = _needs_refresh(resolver, graph, member, partition)
                reason = reason or due.get((member, partition))
                if reason:
                    wanted.setdefault(partition, reason)
        for member in together:
            for child in graph.get(member).child_keys:
                partitioned = graph.get(child).partitions_def is not None
                for partition in wanted:
                    target = partition if partitioned else None
                    if partitioned and partition is None:  # a whole parent: every partition
                        for each in _partition_keys(graph, child):
                            due.setdefault((child, each), "upstream")
                    else:
                        due.setdefault((child, target), "upstream")
        plan.append((together, wanted))
    return plan


def refresh(
    instance: dg.DagsterInstance,
    assets: Sequence[dg.AssetsDefinition],
    materialize: Materialize,
) -> RefreshReport:
    """Bring `assets` up to date; `materialize(keys, partition_range)` runs one materialization.

    The plan runs in as few runs as it can: the partitioned sets that need the same partitions
    together, one run per contiguous range (a run executes its steps in dependency order), then
    the unpartitioned ones. A second look afterwards catches what the plan could not foresee.
    """
    graph = AssetGraph.from_assets(assets)
    report = RefreshReport()
    for _ in range(3):  # the follow-through converges in one pass; the rest are a safeguard
        plan = _plan(_resolver(instance, graph), graph)
        pending = [(keys, wanted) for keys, wanted in plan if wanted]
        if not pending:
            break
        by_partitions: dict[tuple, list[dg.AssetKey]] = {}
        whole: list[dg.AssetKey] = []
        for keys, wanted in pending:
            name = ", ".join(k.to_user_string() for k in keys)
            if None in wanted:
                whole += keys
                report.recomputed[name] = []
                continue
            order = _partition_keys(graph, keys[0])
            by_partitions.setdefault(tuple(p for p in order if p in wanted), []).extend(keys)
            report.recomputed[name] = [f"{p} ({wanted[p]})" for p in order if p in wanted]
        for partitions, keys in by_partitions.items():
            order = _partition_keys(graph, keys[0])
            for low_high in contiguous(list(partitions), order):
                materialize(keys, low_high)
        if whole:
            materialize(whole, None)
    for keys, _ in _plan(_resolver(instance, graph), graph):
        name = ", ".join(k.to_user_string() for k in keys)
        if name not in report.recomputed:
            resolver = _resolver(instance, graph)
            report.skipped[name] = (
                "in sync" if _materialized(resolver, graph, keys[0]) else "never materialized"
            )
    return report


def _materialized(
    resolver: CachingStaleStatusResolver, graph: AssetGraph, key: dg.AssetKey
) -> bool:
    return any(
        resolver.get_status(key, partition) != StaleStatus.MISSING
        for partition in _partition_keys(graph, key)
    )
