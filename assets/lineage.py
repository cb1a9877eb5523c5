"""Lineage columns: which table versions, runs and code each row of a stage came from."""

import dagster as dg
import polars as pl

from resources.delta_io import version_read


def upstream_versions(
    context: dg.AssetExecutionContext, prefix: str, top_k_excerpts: pl.DataFrame, *read: str
) -> pl.DataFrame:
    """Per layer: the neuron_records version behind the top_k_excerpts rows, and the version at
    which this step read top_k_excerpts and each table in `read`."""
    return (
        top_k_excerpts.select("layer", "neuron_records_version")
        .unique("layer")
        .with_columns(
            **{
                f"{name}_version": pl.lit(
                    version_read(context, dg.AssetKey([prefix, name])), dtype=pl.Int64
                )
                for name in ("top_k_excerpts", *read)
            }
        )
    )


def explanation_id() -> pl.Expr:
    """`layer/neuron/explainer@hash/sample`: names one explanation in every table."""
    return pl.format("{}/{}/{}@{}/{}", "layer", "neuron", "explainer", "explainer_hash", "sample")


def simulation_id() -> pl.Expr:
    return pl.format("{}/{}@{}", explanation_id(), "simulator", "simulator_hash")
