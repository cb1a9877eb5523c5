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


def refresh(
    instance: dg.DagsterInstance,
    assets: Sequence[dg.AssetsDefinition],
    materialize: Materialize,
) -> RefreshReport:
    """Bring `assets` up to date; `materialize(keys, partition_range)` runs one materialization."""
    graph = AssetGraph.from_assets(assets)
    report = RefreshReport()
    done: set[dg.AssetKey] = set()
    for key in graph.toposorted_asset_keys:
        if key in done:
            continue
        together = sorted(graph.get(key).execution_set_asset_keys, key=lambda k: k.path)
        done.update(together)
        name = ", ".join(k.to_user_string() for k in together)
        resolver = _resolver(instance, graph)
        wanted: dict[str | None, str] = {}
        for member in together:
            for partition in _partition_keys(graph, member):
                reason = _needs_refresh(resolver, graph, member, partition)
                if reason:
                    wanted.setdefault(partition, reason)
        if not wanted:
            report.skipped[name] = (
                "in sync" if _materialized(resolver, graph, key) else "never materialized"
            )
            continue
        if None in wanted:
            materialize(together, None)
            report.recomputed[name] = []
            continue
        order = _partition_keys(graph, key)
        for low, high in contiguous(list(wanted), order):
            materialize(together, (low, high))
        report.recomputed[name] = [f"{p} ({wanted[p]})" for p in order if p in wanted]
    return report


def _materialized(
    resolver: CachingStaleStatusResolver, graph: AssetGraph, key: dg.AssetKey
) -> bool:
    return any(
        resolver.get_status(key, partition) != StaleStatus.MISSING
        for partition in _partition_keys(graph, key)
    )
