"""Nested list columns built from flat arrays, for frames of many lists of numbers or tokens."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def nested_lists(flat: np.ndarray, *lengths: np.ndarray) -> pl.Series:
    """Nested lists from flat values and the length of every list, innermost level first.

    Built through Arrow offsets: a Python list per neuron would dominate the write time.
    """
    array = pa.array(np.ascontiguousarray(flat))
    for length in lengths:
        offsets = np.concatenate([[0], np.cumsum(length)]).astype(np.int32)
        array = pa.ListArray.from_arrays(pa.array(offsets), array)
    return pl.Series(array)
