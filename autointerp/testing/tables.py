"""Synthetic tables in the stages' schemas, for tests and benchmarks that build their own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from autointerp.storage.schemas import SIMULATIONS_SCHEMA

# What a simulations row says when its reply was read in full by the method it asked for.
_SIMULATION_DEFAULTS: dict[str, Any] = {
    "method": "chat-logprobs",
    "missing_positions": [],
    "sampled_positions": [],
    "folded_positions": [],
    "truncated": False,
    "call_ids": [],
    "error": None,
}


def simulations_frame(columns: Mapping[str, Any]) -> pl.DataFrame:
    """A simulations table from the given columns (sequences, or a value for every row); the
    columns not given take a complete, error-free reply's values."""
    frame = pl.DataFrame(dict(columns))
    for name, value in _SIMULATION_DEFAULTS.items():
        if name not in frame.columns:
            column = pl.Series(name, [value] * frame.height, dtype=SIMULATIONS_SCHEMA[name])
            frame = frame.with_columns(column)
    return frame.select(list(SIMULATIONS_SCHEMA)).cast(SIMULATIONS_SCHEMA)
