"""The reference method's splits of a neuron's excerpts (REFERENCE.md).

Top records are interleaved: train = 0, 4, 8, ...; calibration = 1, 5, ...; valid = 2, 6, ...;
test = 3, 7, .... Random records: calibration = 0, 3, ...; valid = 1, 4, ...; test = 2, 5, ....
The explainer sees the train top records; calibration, valid and test each hold top and random
records 1:1 ("top-and-random"), so where one kind has more, the extras are left out. The neuron's
reference random records (never scored: the baseline explainer's base rates) are split "train",
kind "random".
"""

from __future__ import annotations

import polars as pl

from autointerp.storage.schemas import EXCERPTS_SCHEMA

# The neuron_records columns split_records reads: not the quantile bands or the moments.
SPLIT_COLUMNS = (
    "layer",
    "neuron",
    *(
        f"{kind}_{part}"
        for kind in ("top", "random", "reference")
        for part in ("excerpt_ids", "activations")
    ),
)
TOP_SPLITS = ("train", "calibration", "valid", "test")
RANDOM_SPLITS = ("calibration", "valid", "test")
SCORING_SPLITS = RANDOM_SPLITS


def _explode(records: pl.DataFrame, kind: str, ids: str, acts: str, splits: tuple) -> pl.DataFrame:
    """One row per (neuron, excerpt) of one kind, with its rank and split."""
    frame = (
        records.select("layer", "neuron", pl.col(ids).alias("excerpt_id"), pl.col(acts))
        .explode("excerpt_id", acts)
        .drop_nulls("excerpt_id")  # an empty sample explodes into one null row
        .rename({acts: "activations"})
        .with_columns(rank=pl.int_range(pl.len()).over("layer", "neuron").cast(pl.Int32))
    )
    return frame.with_columns(
        kind=pl.lit(kind),
        split=(pl.col("rank") % len(splits)).replace_strict(dict(enumerate(splits))),
        max_activation=pl.col("activations").list.max(),
    )


def split_records(records: pl.DataFrame) -> pl.DataFrame:
    """Neuron records (a row per neuron) -> top_k_excerpts (a row per neuron, split, excerpt)."""
    top = _explode(records, "top", "top_excerpt_ids", "top_activations", TOP_SPLITS)
    rand = _explode(records, "random", "random_excerpt_ids", "random_activations", RANDOM_SPLITS)
    kinds = [top, rand]
    if "reference_excerpt_ids" in records.columns:
        kinds.append(
            _explode(
                records, "random", "reference_excerpt_ids", "reference_activations", ("train",)
            )
        )
    both = pl.concat([kind.select(*EXCERPTS_SCHEMA) for kind in kinds]).cast(EXCERPTS_SCHEMA)
    # 1:1 in the scoring splits: keep as many of each kind as the scarcer kind has.
    group = ("layer", "neuron", "split", "kind")
    return (
        both.sort(*group, "rank")
        .with_columns(position=pl.int_range(pl.len()).over(group), per_kind=pl.len().over(group))
        .with_columns(scarcer=pl.col("per_kind").min().over("layer", "neuron", "split"))
        .filter((pl.col("split") == "train") | (pl.col("position") < pl.col("scarcer")))
        .select(*EXCERPTS_SCHEMA)
        .sort("layer", "neuron", "kind", "rank")
    )
