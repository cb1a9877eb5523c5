"""A published dataset written by the project itself from the format's fields (no downloaded
data): two synthetic layers of eight neurons, explained and scored by the offline baselines."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from autointerp.config.settings import RecordsSpec
from autointerp.interchange.exporting import EXPORTED_SET, EXPORTED_SPLIT, LayerTables
from autointerp.interchange.exporting import export_openai as write_published
from autointerp.testing.layers import Layers, synthetic_layers

SPEC = RecordsSpec(top_k=8, random_k=6, reference_k=4, quantile_k=2)
LAYERS, NEURONS = (0, 1), 8
RECORDS_SECTION = "[records]\ntop_k = 8\nrandom_k = 6\nreference_k = 4\nquantile_k = 2\n"


def layer_tables(source: Layers, layer: int) -> LayerTables:
    """What an export of `layer` reads, taken from in-memory tables."""

    def rows(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("layer") == layer)

    return LayerTables(
        records=rows(source.records),
        corpus=source.corpus.select("excerpt_id", "tokens"),
        explanations=rows(source.explanations),
        simulations=rows(source.simulations).filter(pl.col("split") == EXPORTED_SPLIT),
        scores=rows(source.scores).filter(
            (pl.col("split") == EXPORTED_SPLIT) & (pl.col("scored_on") == EXPORTED_SET)
        ),
    )


@pytest.fixture(scope="session")
def source() -> Layers:
    return synthetic_layers(LAYERS, NEURONS, SPEC, tokens=16, excerpts=300)


@pytest.fixture(scope="session")
def published(tmp_path_factory, source) -> Path:
    """The source tables exported in the published layout (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("published") / "dataset"
    write_published(out, LAYERS, lambda layer: layer_tables(source, layer), {"model": "source"})
    return out
