"""Content hashes and the data version a write gets: the same rows keep their version however
the write was made; changed rows get a new one."""

from __future__ import annotations

import polars as pl

from autointerp.storage.content import (
    HASH_CHUNK_ROWS,
    Previous,
    data_version,
    frame_hash,
    partition_hashes,
)


def frame(scale: float = 1.0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "layer": [0, 0, 1],
            "neuron": [1, 0, 0],
            "activations": [[0.5 * scale, 1.0], [2.0], [3.0]],
            "explanation": ["the word king", None, "x" * 40],
            "corpus_version": [3, 3, 3],
            "dagster_run_id": ["a", "a", "a"],
            "latency_s": [0.1, 0.2, 0.3],
        }
    )


def test_the_hash_is_of_content_not_of_row_order_or_provenance():
    base = frame()
    rerun = base.reverse().with_columns(
        corpus_version=pl.lit(9), dagster_run_id=pl.lit("b"), latency_s=pl.lit(1.5)
    )
    assert frame_hash(rerun) == frame_hash(base)
    assert frame_hash(frame(scale=2.0)) != frame_hash(base)
    assert frame_hash(base.with_columns(explanation=pl.lit("another"))) != frame_hash(base)


def test_a_frame_longer_than_a_chunk_hashes_alike_however_it_is_chunked_or_ordered():
    rows = 3 * HASH_CHUNK_ROWS + 7
    big = pl.DataFrame(
        {
            "neuron": list(range(rows)),
            "tokens": [[f"t{i}", "x"] for i in range(rows)],
            "value": [i / 7 for i in range(rows)],
        }
    )
    pieces = pl.concat(
        [big.slice(HASH_CHUNK_ROWS // 2), big.head(HASH_CHUNK_ROWS // 2)], rechunk=False
    )
    assert pieces.n_chunks() > 1
    assert frame_hash(pieces) == frame_hash(big)
    # A change in the last chunk only changes the hash.
    last = big.with_columns(
        value=pl.when(pl.col("neuron") == rows - 1).then(0.0).otherwise("value")
    )
    assert frame_hash(last) != frame_hash(big)


def test_partitions_are_hashed_on_their_own_rows():
    hashes = partition_hashes(frame(), "layer", ["0", "1", "2"])
    assert hashes["0"] == frame_hash(frame().filter(pl.col("layer") == 0))
    assert hashes["2"] == frame_hash(frame().clear())  # a layer without rows
    changed = partition_hashes(frame().with_columns(neuron=pl.col("neuron") + 1), "layer", ["0"])
    assert changed["0"] != hashes["0"]
    assert partition_hashes(frame(), None) == {None: frame_hash(frame())}


def test_a_write_of_unchanged_layers_keeps_their_version():
    # Layers 0-1 were written together (version v01), layer 2 alone (v2).
    previous = {"0": Previous("h0", "v01"), "1": Previous("h1", "v01"), "2": Previous("h2", "v2")}
    assert data_version({"0": "h0"}, previous) == "v01"  # one layer rerun on its own
    assert data_version({"0": "h0", "1": "h1"}, previous) == "v01"
    # Layers of several versions keep the most common one (ties: the smallest).
    assert data_version({"0": "h0", "1": "h1", "2": "h2"}, previous) == "v01"
    assert data_version({"1": "h1", "2": "h2"}, previous) == "v01"


def test_a_write_that_changed_anything_gets_a_version_from_its_content():
    previous = {"0": Previous("h0", "v01"), "1": Previous("h1", "v01")}
    changed = data_version({"0": "h0", "1": "new"}, previous)
    assert changed not in {"v01", "v2"}
    assert changed == data_version({"0": "h0", "1": "new"}, {})  # a function of content alone
    assert data_version({"0": "h0"}, {}) != data_version({"0": "h0", "1": "h1"}, {})
    # A partition written before content hashes were recorded counts as changed.
    assert data_version({"0": "h0"}, {"0": Previous(None, "old")}) != "old"
