"""Which asset partitions are out of date, read from the Dagster instance through its public API.

Each materialization carries Dagster's provenance tags: the code version it was computed with,
the data version it got, and per input the data version it read and the event it read it from.
A partition is stale, as Dagster's own "Unsynced" has it, when

- its asset's code version differs from the one recorded,
- an unpartitioned input now has another data version than the one read,
- a partitioned input's partition was rematerialized after the read with another data version,
- an input was added to or removed from its definition.

Data versions are content hashes (assets/common.py), so a rerun that writes the same rows changes
none, and nothing downstream turns stale. Staleness is not transitive; `pipelines.refresh` adds
what follows from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

# Dagster's provenance tags on every materialization.
CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"
INPUT_VERSION_PREFIX = "dagster/input_data_version/"
INPUT_POINTER_PREFIX = "dagster/input_event_pointer/"


@dataclass(frozen=True)
class Node:
    """One asset as the plan sees it: its inputs, partitions, code version, and the assets it is
    computed with (a multi-asset's outputs run together or not at all)."""

    key: dg.AssetKey
    parents: tuple[dg.AssetKey, ...]
    partitions: tuple[str, ...] | None  # None: unpartitioned
    code_version: str | None
    together: tuple[dg.AssetKey, ...]

    @property
    def name(self) -> str:
        return self.key.to_user_string()


def graph_nodes(assets: Iterable[dg.AssetsDefinition]) -> dict[dg.AssetKey, Node]:
    """The nodes of a graph's assets, in dependency order."""
    nodes: dict[dg.AssetKey, Node] = {}
    for definition in assets:
        partitions = definition.partitions_def
        keys = tuple(sorted(definition.keys, key=lambda k: k.path))
        for key in keys:
            nodes[key] = Node(
                key=key,
                parents=tuple(sorted(definition.asset_deps[key], key=lambda k: k.path)),
                partitions=tuple(partitions.get_partition_keys()) if partitions else None,
                code_version=definition.specs_by_key[key].code_version,
                together=keys if not definition.can_subset else (key,),
            )
    return {key: nodes[key] for key in _toposorted(nodes)}


def _toposorted(nodes: Mapping[dg.AssetKey, Node]) -> list[dg.AssetKey]:
    done: list[dg.AssetKey] = []
    seen: set[dg.AssetKey] = set()

    def visit(key: dg.AssetKey) -> None:
        if key in seen:
            return
        seen.add(key)
        for parent in nodes[key].parents:
            if parent in nodes:
                visit(parent)
        done.append(key)

    for key in sorted(nodes, key=lambda k: k.path):
        visit(key)
    return done


@dataclass(frozen=True)
class Recorded:
    """The latest materialization of one asset partition, as its tags recorded it."""

    storage_id: int
    code_version: str | None
    data_version: str | None
    input_versions: Mapping[dg.AssetKey, str]
    input_pointers: Mapping[dg.AssetKey, int | None]

    @classmethod
    def of(cls, record: dg.EventLogRecord) -> Recorded:
        tags = record.asset_materialization.tags or {}
        versions, pointers = {}, {}
        for tag, value in tags.items():
            if tag.startswith(INPUT_VERSION_PREFIX):
                versions[dg.AssetKey.from_user_string(tag[len(INPUT_VERSION_PREFIX) :])] = value
            elif tag.startswith(INPUT_POINTER_PREFIX):
                key = dg.AssetKey.from_user_string(tag[len(INPUT_POINTER_PREFIX) :])
                pointers[key] = int(value) if value.isdigit() else None
        return cls(
            storage_id=record.storage_id,
            code_version=tags.get(CODE_VERSION_TAG),
            data_version=tags.get(DATA_VERSION_TAG),
            input_versions=versions,
            input_pointers=pointers,
        )


class Materializations:
    """What the instance recorded of a graph's assets, read once per asset partition."""

    def __init__(self, instance: dg.DagsterInstance, nodes: Mapping[dg.AssetKey, Node]) -> None:
        self.instance, self.nodes = instance, nodes
        self._latest: dict[tuple[dg.AssetKey, str | None], Recorded | None] = {}

    def latest(self, key: dg.AssetKey, partition: str | None) -> Recorded | None:
        if (key, partition) not in self._latest:
            self._latest[(key, partition)] = self._fetch(key, partition)
        return self._latest[(key, partition)]

    def version_at(self, key: dg.AssetKey, partition: str, pointer: int | None) -> str | None:
        """The data version `partition` of `key` had when the event at `pointer` was read."""
        found = self._fetch(key, partition, before=None if pointer is None else pointer + 1)
        return found.data_version if found else None

    def exists(self, key: dg.AssetKey, partition: str | None) -> bool:
        return self.latest(key, partition) is not None

    def materialized(self, key: dg.AssetKey) -> bool:
        """Any partition of `key` (or the whole of an unpartitioned asset) was materialized."""
        return any(self.exists(key, p) for p in partitions_of(self.nodes[key]))

    def _fetch(
        self, key: dg.AssetKey, partition: str | None, before: int | None = None
    ) -> Recorded | None:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key,
                asset_partitions=[partition] if partition is not None else None,
                before_storage_id=before,
            ),
            limit=1,
        ).records
        return Recorded.of(records[0]) if records else None


def partitions_of(node: Node) -> tuple[str | None, ...]:
    return node.partitions if node.partitions is not None else (None,)


def stale_causes(state: Materializations, key: dg.AssetKey, partition: str | None) -> list[str]:
    """Why a materialized partition is stale (empty: in sync). Dagster's own rules, above."""
    node = state.nodes[key]
    recorded = state.latest(key, partition)
    if recorded is None:
        return []
    causes = []
    if recorded.code_version != node.code_version:
        causes.append("code version changed")
    for removed in sorted(set(recorded.input_versions) - set(node.parents), key=lambda k: k.path):
        causes.append(f"input {removed.to_user_string()} removed")
    for parent in node.parents:
        label = parent.to_user_string()
        if parent not in recorded.input_versions:
            causes.append(f"new input {label}")
            continue
        upstream = state.nodes.get(parent)
        if upstream is None or upstream.partitions is None:
            current = state.latest(parent, None)
            if (current.data_version if current else None) != recorded.input_versions[parent]:
                causes.append(f"{label} changed")
            continue
        read = [partition] if node.partitions is not None else list(upstream.partitions)
        pointer = recorded.input_pointers.get(parent)
        changed = [
            each
            for each in read
            if _updated_since(state, parent, each, pointer)
            and state.version_at(parent, each, pointer) != state.latest(parent, each).data_version
        ]
        if changed:
            where = "layer" if len(changed) == 1 else "layers"
            causes.append(f"{label} {where} {', '.join(changed)} changed")
    return causes


def _updated_since(
    state: Materializations, key: dg.AssetKey, partition: str, pointer: int | None
) -> bool:
    latest = state.latest(key, partition)
    return latest is not None and pointer is not None and latest.storage_id > pointer
