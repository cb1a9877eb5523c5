"""This project's records, explanations and scored simulations in the published layout, so that
code written for the published data reads them unchanged.

Per neuron of each exported layer:
- `collated-activations/{layer}/{neuron}.json`, a NeuronRecord: the top excerpts as
  `most_positive_activation_records` (strongest first), the scored random excerpts then the
  reference ones as `random_sample` (so the reference's slices of its first 15 give the same
  calibration / valid / test records as here), the quantile bands, their boundaries and the
  moments, with each excerpt's token strings from the corpus;
- `explanations/{layer}/{neuron}.jsonl`, one NeuronSimulationResults line: one explainer
  profile's usable explanation samples in sample order (a sample's position in
  `scored_explanations`), each with one simulator profile's simulations of the test split (top
  excerpts, then random ones) and the stored scores of that split on top_and_random. A neuron
  without a usable explanation has no file, as the publication's reader expects.

Expected activations are the simulator's 0-10 values (`simulated_normalized_activations`), null
where it gave none; a calibrated simulator's stored rsquared and absolute_dev_explained are of
its calibrated predictions, which are not written (its `uncalibrated_simulation` is null), and
`autointerp-export.json` says which profiles, tables and versions the files come from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa

from autointerp.errors import InputError
from autointerp.interchange.layout import EXPLANATIONS, RECORDS, staged_folder
from autointerp.interchange.published import (
    activation_record,
    dumps,
    many_objects,
    neuron_record,
    neuron_simulation_results,
    scored_explanation,
    scored_sequence_simulation,
)
from autointerp.storage import delta

MANIFEST = "autointerp-export.json"
SAMPLES = ("top", "random", "reference")  # neuron_records' excerpt columns, top_excerpt_ids, ...
EXPORTED_SPLIT, EXPORTED_SET = "test", "top_and_random"
# The tables an export reads, and the columns it takes of each.
READ = {
    "neuron_records": [
        "neuron",
        "mean",
        "variance",
        "skewness",
        "kurtosis",
        "quantile_boundaries",
        "top_excerpt_ids",
        "top_activations",
        "random_excerpt_ids",
        "random_activations",
        "reference_excerpt_ids",
        "reference_activations",
        "quantile_excerpt_ids",
        "quantile_activations",
    ],
    "explanations": ["neuron", "explainer", "explainer_hash", "sample", "explanation", "error"],
    "simulations": [
        "neuron",
        "explainer",
        "simulator",
        "simulator_hash",
        "sample",
        "excerpt_id",
        "split",
        "kind",
        "true_activations",
        "expected_activations",
        "error",
    ],
    "scores": [
        "neuron",
        "explainer",
        "simulator",
        "sample",
        "split",
        "scored_on",
        "ev_correlation",
        "rsquared",
        "absolute_dev_explained",
    ],
}


@dataclass(frozen=True)
class LayerTables:
    """What one layer's files are written from: its neuron_records rows, the token strings of
    their excerpts (corpus: excerpt_id, tokens), and one explainer's explanations with one
    simulator's simulations and scores of them."""

    records: pl.DataFrame
    corpus: pl.DataFrame
    explanations: pl.DataFrame
    simulations: pl.DataFrame
    scores: pl.DataFrame


def read_layer(
    model_root: str,
    layer: int,
    explainer: str,
    simulator: str,
    versions: Mapping[str, int],
    storage_options: Mapping[str, str] | None = None,
) -> LayerTables:
    """A layer's tables as the export reads them, each at the version given (pinned once, so that
    every layer comes from the same versions)."""

    def read(
        table: str, where: pl.Expr | None = None, columns: list[str] | None = None
    ) -> pl.DataFrame:
        return delta.read_table(
            f"{model_root}/{table}",
            partition_column="layer",
            partitions=[layer],
            version=versions[table],
            columns=columns or READ[table],
            where=where,
            storage_options=storage_options,
        )

    records = read("neuron_records")
    ids = pl.concat(
        [records[f"{name}_excerpt_ids"].explode().drop_nulls() for name in SAMPLES]
        + [records["quantile_excerpt_ids"].explode().explode().drop_nulls()]
    )
    wanted = pl.col("excerpt_id").is_in(ids.unique().implode())
    # Corpora live side by side in the corpus table, their excerpt ids overlapping: read the one
    # the layer's records name (records written before corpora had an identity name none).
    uri, version = f"{model_root}/neuron_records", versions["neuron_records"]
    named = delta.read_table(
        uri, version=version, where=pl.lit(False), storage_options=storage_options
    )
    if "corpus_id" in named.columns:
        corpus_ids = read("neuron_records", columns=["corpus_id"])["corpus_id"].drop_nulls()
        if len(corpus_ids):
            wanted &= pl.col("corpus_id").is_in(corpus_ids.unique().implode())
    corpus = delta.read_table(
        f"{model_root}/corpus",
        version=versions["corpus"],
        columns=["excerpt_id", "tokens"],
        where=wanted,
        storage_options=storage_options,
    )
    by_explainer = pl.col("explainer") == explainer
    by_both = by_explainer & (pl.col("simulator") == simulator)
    return LayerTables(
        records=records,
        corpus=corpus,
        explanations=read("explanations", by_explainer),
        simulations=read("simulations", by_both & (pl.col("split") == EXPORTED_SPLIT)),
        scores=read(
            "scores",
            by_both & (pl.col("split") == EXPORTED_SPLIT) & (pl.col("scored_on") == EXPORTED_SET),
        ),
    )


class _Lists:
    """The lists of a nested list column, row by row, as slices of its flat values: numpy
    slices of numbers, Python lists of strings (a Python object per float would dominate the
    export's time)."""

    def __init__(self, column: pl.Series) -> None:
        array = column.to_arrow()
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        self.offsets: list[list[int]] = []
        while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
            self.offsets.append(array.offsets.to_numpy().tolist())
            array = array.values
        values = array.to_numpy(zero_copy_only=False)
        self.values = values.tolist() if values.dtype == object else values

    def flat(self, row: int, level: int = 0) -> Any:
        """Row `row` of a list column (or list `row` of the level `level`)."""
        offsets = self.offsets[level]
        return self.values[offsets[row] : offsets[row + 1]]

    def lists(self, row: int, level: int = 0) -> list:
        """The inner lists of row `row` of a list-of-lists column."""
        offsets = self.offsets[level]
        return [self.flat(i, level + 1) for i in range(offsets[row], offsets[row + 1])]

    def bands(self, row: int) -> list[list]:
        """The lists of lists of row `row` of a three-level column (the quantile bands)."""
        offsets = self.offsets[0]
        return [self.lists(band, level=1) for band in range(offsets[row], offsets[row + 1])]


def _tokens(corpus: pl.DataFrame) -> Callable[[int], list[str]]:
    index = {excerpt_id: i for i, excerpt_id in enumerate(corpus["excerpt_id"].to_list())}
    tokens = _Lists(corpus["tokens"])

    def of(excerpt_id: int) -> list[str]:
        if excerpt_id not in index:
            raise InputError(f"excerpt {excerpt_id} is not in the corpus table")
        return tokens.flat(index[excerpt_id])

    return of


def neuron_records(layer: int, tables: LayerTables) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each neuron's NeuronRecord object, one neuron at a time."""
    records, tokens_of = tables.records, _tokens(tables.corpus)
    acts = {name: _Lists(records[f"{name}_activations"]) for name in SAMPLES}
    quantile = _Lists(records["quantile_activations"])
    ids = {name: records[f"{name}_excerpt_ids"].to_list() for name in SAMPLES}
    band_ids = records["quantile_excerpt_ids"].to_list()
    boundaries = records["quantile_boundaries"].to_list()
    moments = records.select("mean", "variance", "skewness", "kurtosis").rows()

    def excerpts(name: str, row: int) -> list[dict]:
        return [
            activation_record(tokens_of(i), a)
            for i, a in zip(ids[name][row], acts[name].lists(row), strict=True)
        ]

    for row, neuron in enumerate(records["neuron"].to_list()):
        yield (
            neuron,
            neuron_record(
                layer,
                neuron,
                top=excerpts("top", row),
                random=excerpts("random", row) + excerpts("reference", row),
                by_quantile=[
                    [activation_record(tokens_of(i), a) for i, a in zip(b_ids, b_acts, strict=True)]
                    for b_ids, b_acts in zip(band_ids[row], quantile.bands(row), strict=True)
                ],
                quantile_boundaries=boundaries[row],
                moments=moments[row],
            ),
        )


def simulation_results(layer: int, tables: LayerTables) -> dict[int, dict[str, Any]]:
    """Each explained neuron's NeuronSimulationResults object."""
    explained = tables.explanations.filter(
        pl.col("error").is_null() & pl.col("explanation").is_not_null()
    ).sort("neuron", "sample")
    order = pl.concat(
        [
            tables.records.select(
                "neuron", pl.col(column).alias("excerpt_id"), kind_order=pl.lit(i, pl.Int32)
            )
            .explode("excerpt_id")
            .with_columns(position=pl.int_range(pl.len()).over("neuron"))
            for i, column in enumerate(("top_excerpt_ids", "random_excerpt_ids"))
        ]
    ).drop_nulls("excerpt_id")
    # Top excerpts first, each kind in its records' order, as the reference lists its splits.
    simulations = (
        tables.simulations.filter(
            pl.col("error").is_null() & pl.col("expected_activations").is_not_null()
        )
        .join(order, on=["neuron", "excerpt_id"], how="left")
        .sort("neuron", "sample", "kind_order", "position", "excerpt_id", nulls_last=True)
    )
    true, expected = (
        _Lists(simulations["true_activations"]),
        _Lists(simulations["expected_activations"]),
    )
    rows: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(simulations.select("neuron", "sample").rows()):
        rows.setdefault(key, []).append(i)
    excerpt_ids = simulations["excerpt_id"].to_list()
    scores = {
        (neuron, sample): values
        for neuron, sample, *values in tables.scores.select(
            "neuron", "sample", "ev_correlation", "rsquared", "absolute_dev_explained"
        ).rows()
    }
    tokens_of = _tokens(tables.corpus)
    by_neuron: dict[int, list[dict]] = {}
    for neuron, sample, explanation in explained.select("neuron", "sample", "explanation").rows():
        sequences = [
            scored_sequence_simulation(tokens_of(excerpt_ids[i]), true.flat(i), expected.flat(i))
            for i in rows.get((neuron, sample), [])
        ]
        by_neuron.setdefault(neuron, []).append(
            scored_explanation(explanation, sequences, scores.get((neuron, sample), (None,) * 3))
        )
    return {
        neuron: neuron_simulation_results(layer, neuron, explained)
        for neuron, explained in by_neuron.items()
    }


def write_layer(folder: Path, layer: int, tables: LayerTables) -> tuple[int, int]:
    """The layer's files under `folder`: (records written, explanation files written)."""
    with many_objects():
        return _write_layer(folder, layer, tables)


def _write_layer(folder: Path, layer: int, tables: LayerTables) -> tuple[int, int]:
    records = folder / RECORDS / str(layer)
    records.mkdir(parents=True)
    for neuron, record in neuron_records(layer, tables):
        (records / f"{neuron}.json").write_bytes(dumps(record))
    explanations = folder / EXPLANATIONS / str(layer)
    explanations.mkdir(parents=True)
    results = simulation_results(layer, tables)
    for neuron, result in results.items():
        (explanations / f"{neuron}.jsonl").write_bytes(dumps(result) + b"\n")
    return tables.records.height, len(results)


def export_openai(
    out: Path,
    layers: Sequence[int],
    tables_of: Callable[[int], LayerTables],
    manifest: Mapping[str, Any],
) -> dict[str, Any]:
    """Write `layers` (each layer's tables from `tables_of`) into the new folder `out`, with
    `manifest` (what was exported, from where) as MANIFEST. Nothing is left at `out` when any
    layer fails, or when no neuron had an explanation to export. Returns the manifest written."""
    counts, hashes = {}, {"explainer": set(), "simulator": set()}
    with staged_folder(out) as stage:
        for layer in layers:
            tables = tables_of(layer)
            if tables.records.is_empty():
                raise InputError(f"layer {layer} has no neuron records: materialize it first")
            written, explained = write_layer(stage, layer, tables)
            counts[str(layer)] = {"neurons": written, "explained": explained}
            hashes["explainer"].update(tables.explanations["explainer_hash"].unique())
            hashes["simulator"].update(tables.simulations["simulator_hash"].unique())
        if not any(c["explained"] for c in counts.values()):
            raise InputError(
                f"no usable explanation of explainer {manifest.get('explainer')!r} in layers "
                f"{list(layers)}: nothing to export (name another with --explainer)"
            )
        written = {
            **manifest,
            **{f"{role}_hashes": sorted(found) for role, found in hashes.items()},
            "layers": counts,
        }
        (stage / MANIFEST).write_bytes(orjson.dumps(written, option=orjson.OPT_INDENT_2))
    return written
