"""Summaries of the tables, for the CLI and materialization metadata."""

from __future__ import annotations

import polars as pl


def records_summary(records: pl.DataFrame) -> pl.DataFrame:
    """Per layer: neurons, how many never fire (max <= 0), and the spread of max activations."""
    return (
        records.group_by("layer")
        .agg(
            neurons=pl.len(),
            dead=(pl.col("max_activation") <= 0).sum(),
            max_act_median=pl.col("max_activation").median(),
            max_act_p90=pl.col("max_activation").quantile(0.9),
            max_act_max=pl.col("max_activation").max(),
            kurtosis_median=pl.col("kurtosis").median(),
        )
        .sort("layer")
    )
