"""How a range of layers becomes Dagster runs, so that memory stays flat in the layers.

A step of a layer-partitioned asset reads its inputs and writes its output as whole frames of
every layer its run covers, so a run over 30 layers holds 30 layers' rows at once. Every step
therefore runs one layer per run, but the capture: there one forward pass over the corpus serves
every layer of its run, and its memory is what it keeps (the records) and the model's weights
through the deepest layer. A range deeper than `capture_layers_per_run` is captured in several
runs of that many layers, so that memory does not grow with the range; each run hands the
residual stream after its deepest layer to the next (`autointerp.activations.residuals`), so
together they do the forward work of one pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from assets.neuron_records import SHARD_PREFIX

# Steps that serve every layer of a range from one pass over the corpus (the capture, or its
# shard steps), and an imported model's import (its records, their corpus and its explanations:
# one multi-asset, whole or not at all).
ONE_PASS = frozenset({"neuron_records", "corpus", "imported_explanations"})

Range = tuple[str, str]


def layer_runs(
    names: Sequence[str], layers: Range, order: Sequence[str], capture_layers_per_run: int = 0
) -> list[tuple[list[str], Range]]:
    """(asset names, layer range) per run, in order: the one-pass steps first, over the range in
    runs of at most `capture_layers_per_run` layers (0: the whole range in one run), then the
    other steps one layer at a time. The corpus, which has no layers, runs with the first of
    them. An import is one run over the whole range, whole or not at all. With the capture in
    shards, the merge (`neuron_records`) is one of the others: it reads the shards' partial
    records, which are several times the records, one layer at a time."""
    sharded = any(name.startswith(SHARD_PREFIX) for name in names)

    def one_pass(name: str) -> bool:
        if name == "neuron_records":
            return not sharded
        return name in ONE_PASS or name.startswith(SHARD_PREFIX)

    low, high = order.index(layers[0]), order.index(layers[1])
    span = order[low : high + 1]
    once = [name for name in names if one_pass(name)]
    rest = [name for name in names if not one_pass(name)]
    step = capture_layers_per_run or len(span)
    if "imported_explanations" in once:
        step = len(span)
    chunks = [span[start : start + step] for start in range(0, len(span), step)]
    runs = []
    for number, chunk in enumerate(chunks):
        steps = once if number == 0 else [name for name in once if name != "corpus"]
        if steps:
            runs.append((steps, (chunk[0], chunk[-1])))
    if rest:
        runs += [(rest, (layer, layer)) for layer in span]
    return runs
