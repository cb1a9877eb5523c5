"""Subject models side by side: how explainable each model's neurons are, by relative depth, and
how far each model is from a reference model — for the study's models or any declared ones.

Every model is read through the same rule as the other summaries: each neuron counts once, with
its explanation sample chosen on the valid split (`best_samples`), scored by ev_correlation on
`split` and `scored_on`. Only the explainer and simulator profiles that scored every model are
compared, and every model must have been scored on as many excerpts per neuron, so no model
gains from an easier split.

Per model, per relative-depth bin (a layer's depth is the middle of its layer, (layer + ½) /
layers, so models of different depths line up) and over all layers: neurons, the share whose
score is undefined (constant activations), the dead share (never above 0 on the corpus, as
`records_summary` counts them: invisible to the method, which scales relu'd activations), the
mean, median and shares at or above 0.5 and 0.8 of the defined scores, and beside them the
model's chance floor (`score.floor`: the mean score of other neurons' explanations, test split
only), since a model whose neurons fire on the same common tokens would score well by chance.

The difference from the reference is of means, model − reference, in the same depth bin. Neurons
of two models do not correspond one to one, so the pairing is by profile, corpus, split sizes
and depth, not by neuron; its 95% interval is a percentile bootstrap of the two means, each
model's neurons resampled on their own (with a seed derived from the configured one, the model
and the bin, so an interval does not depend on which other models are compared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.activations.data_model import is_dead
from autointerp.errors import InputError
from autointerp.score.selection import PROFILE, best_samples
from autointerp.score.statistics import bootstrap_means, percentile_interval
from autointerp.score.summary import GOOD_SCORE
from autointerp.storage.hashing import content_hash
from autointerp.storage.schemas import MODEL_COMPARISON_SCHEMA

FAIR_SCORE = 0.5
ALL_DEPTHS = "all"
# Where the comparison of the configured models is stored, under the Delta root: its asset key.
COMPARISON_KEY = ("comparison", "across_models")
# The columns each model's tables are read with.
SCORE_COLUMNS = (*PROFILE, "layer", "neuron", "sample", "split", "scored_on", "ev_correlation")
SCORE_COLUMNS += ("excerpt_ids",)
RECORD_COLUMNS = ("layer", "neuron", "max_activation")
FLOOR_COLUMNS = (*PROFILE, "layer", "split", "scored_on", "ev_correlation")


@dataclass(frozen=True)
class ModelResults:
    """One subject model's scores, neuron records and chance-floor scores (at least
    SCORE_COLUMNS, RECORD_COLUMNS and FLOOR_COLUMNS; no floor when it was never scored)."""

    name: str
    num_layers: int
    scores: pl.DataFrame
    records: pl.DataFrame
    shuffled: pl.DataFrame | None = None


def plot_path(home: Path, name: str = COMPARISON_KEY[1]) -> Path:
    """Where a comparison's figure is written: under AUTOINTERP_HOME/comparison, by name."""
    return home / COMPARISON_KEY[0] / f"{name}.png"


def depth_bin(layer: pl.Expr, num_layers: int, bins: int) -> pl.Expr:
    """The relative-depth bin (0 … bins−1) of each layer: where its middle lies in the model."""
    return ((layer + 0.5) / num_layers * bins).floor().clip(0, bins - 1).cast(pl.Int32)


def depth_label(bin_index: int, bins: int) -> str:
    return f"{bin_index / bins:.2f}-{(bin_index + 1) / bins:.2f}"


def compare_models(
    models: Sequence[ModelResults],
    *,
    reference: str,
    depth_bins: int,
    split: str = "test",
    scored_on: str = "top_and_random",
    n_boot: int = 2000,
    seed: int = 0,
) -> pl.DataFrame:
    """One row per explainer and simulator profile pair, model and depth (MODEL_COMPARISON_SCHEMA),
    models in the order given, `all` depths first."""
    names = [model.name for model in models]
    if reference not in names:
        raise InputError(f"reference model {reference!r} is not among the models {names}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise InputError(f"compare at least two distinct models, not {names}")
    _check_split_sizes(models, split, scored_on)
    neurons = pl.concat([_neurons(model, depth_bins, split, scored_on) for model in models])
    floors = pl.concat([_floor(model, depth_bins, split, scored_on) for model in models])
    profiles = _shared_profiles(neurons, names)
    rows = []
    for profile in profiles:
        same = pl.all_horizontal(pl.col(k) == v for k, v in zip(PROFILE, profile, strict=True))
        chosen, floor = neurons.filter(same), floors.filter(same)
        cells: dict[tuple[str, str], tuple[dict, np.ndarray]] = {}
        for model in names:
            for depth, group in _depth_groups(chosen.filter(pl.col("model") == model), depth_bins):
                scores = group["score"].drop_nulls().to_numpy()
                in_bin = pl.col("model") == model
                if depth != ALL_DEPTHS:
                    in_bin &= pl.col("bin") == group["bin"][0]
                row = {
                    **dict(zip(PROFILE, profile, strict=True)),
                    "split": split,
                    "scored_on": scored_on,
                    "model": model,
                    "reference": reference,
                    "depth": depth,
                    "layers": _layer_range(group),
                    **_distribution(group, scores),
                    "floor_mean": floor.filter(in_bin)["score"].mean(),
                }
                means = bootstrap_means(scores, n_boot=n_boot, seed=_seed(seed, model, depth))
                cells[(model, depth)] = (row, means)
        for (model, depth), (row, means) in cells.items():
            base = None if model == reference else cells.get((reference, depth))
            rows.append({**row, **_difference(row, means, base)})
    return pl.DataFrame(rows, schema=MODEL_COMPARISON_SCHEMA)


def _neurons(model: ModelResults, bins: int, split: str, scored_on: str) -> pl.DataFrame:
    """One row per scored neuron and profile pair: its chosen score, depth bin and whether it
    is dead."""
    dead = model.records.select(
        pl.col("layer").cast(pl.Int32),
        pl.col("neuron").cast(pl.Int32),
        dead=is_dead(pl.col("max_activation")),
    )
    return (
        best_samples(model.scores, split=split, scored_on=scored_on)
        .join(dead, on=["layer", "neuron"], how="left")
        .select(
            pl.lit(model.name).alias("model"),
            *PROFILE,
            "layer",
            "score",
            pl.col("dead").fill_null(False),
            depth_bin(pl.col("layer"), model.num_layers, bins).alias("bin"),
        )
    )


def _floor(model: ModelResults, bins: int, split: str, scored_on: str) -> pl.DataFrame:
    """The model's chance-floor scores on `split` and `scored_on`, with their depth bins."""
    schema = {"model": pl.Utf8, **dict.fromkeys(PROFILE, pl.Utf8), "bin": pl.Int32}
    if model.shuffled is None:
        return pl.DataFrame(schema=schema | {"score": pl.Float64})
    rows = model.shuffled.filter((pl.col("split") == split) & (pl.col("scored_on") == scored_on))
    return rows.select(
        pl.lit(model.name).alias("model"),
        *PROFILE,
        depth_bin(pl.col("layer"), model.num_layers, bins).alias("bin"),
        pl.col("ev_correlation").fill_nan(None).cast(pl.Float64).alias("score"),
    )


def _check_split_sizes(models: Sequence[ModelResults], split: str, scored_on: str) -> None:
    """Refuse models scored on different numbers of excerpts per neuron."""
    sizes = {
        model.name: sorted(
            model.scores.filter((pl.col("split") == split) & (pl.col("scored_on") == scored_on))[
                "excerpt_ids"
            ]
            .list.len()
            .unique()
            .to_list()
        )
        for model in models
    }
    if len({tuple(s) for s in sizes.values()}) > 1:
        raise InputError(
            f"the models were scored on different numbers of excerpts per neuron ({split}, "
            f"{scored_on}): {sizes}; score them with the same [records] settings"
        )


def _shared_profiles(neurons: pl.DataFrame, names: list[str]) -> list[tuple]:
    shared = (
        neurons.group_by(PROFILE)
        .agg(pl.col("model").n_unique().alias("models"))
        .filter(pl.col("models") == len(names))
        .sort(PROFILE)
    )
    if shared.is_empty():
        raise InputError(
            f"no explainer and simulator profile pair scored every model of {names}: run the "
            "same profiles on each"
        )
    return list(shared.select(PROFILE).iter_rows())


def _depth_groups(neurons: pl.DataFrame, bins: int) -> list[tuple[str, pl.DataFrame]]:
    groups = [(ALL_DEPTHS, neurons)]
    for bin_index in sorted(neurons["bin"].unique()):
        groups.append((depth_label(bin_index, bins), neurons.filter(pl.col("bin") == bin_index)))
    return groups


def _layer_range(group: pl.DataFrame) -> str:
    low, high = group["layer"].min(), group["layer"].max()
    return str(low) if low == high else f"{low}-{high}"


def _distribution(group: pl.DataFrame, scores: np.ndarray) -> dict:
    defined = len(scores)
    return {
        "neurons": group.height,
        "scored": defined,
        "undefined_share": 1 - defined / group.height,
        "dead_share": float(group["dead"].mean()),
        "mean": float(scores.mean()) if defined else None,
        "median": float(np.median(scores)) if defined else None,
        "share_ge_0_5": float((scores >= FAIR_SCORE).mean()) if defined else None,
        "share_ge_0_8": float((scores >= GOOD_SCORE).mean()) if defined else None,
    }


def _difference(row: dict, means: np.ndarray, base: tuple[dict, np.ndarray] | None) -> dict:
    """The row's mean minus the reference's in the same depth, with a bootstrap interval."""
    if base is None or row["mean"] is None or base[0]["mean"] is None:
        return {"diff": None, "ci_low": None, "ci_high": None}
    low, high = percentile_interval(means - base[1])
    return {"diff": row["mean"] - base[0]["mean"], "ci_low": low, "ci_high": high}


def _seed(seed: int, model: str, depth: str) -> int:
    return int(content_hash(seed, model, depth), 16)


def comparison_table(comparison: pl.DataFrame) -> pl.DataFrame:
    """The comparison for reading: one line per profile pair, model and depth, the difference
    from the reference written with its interval."""

    def signed(column: str) -> pl.Expr:
        return pl.col(column).map_elements(lambda value: f"{value:+.3f}", return_dtype=pl.Utf8)

    interval = pl.format("{} [{}, {}]", signed("diff"), signed("ci_low"), signed("ci_high"))
    return comparison.select(
        "explainer",
        "simulator",
        "model",
        "depth",
        "layers",
        "neurons",
        "scored",
        pl.col("dead_share").round(3).alias("dead"),
        pl.col("undefined_share").round(3).alias("undefined"),
        pl.col("mean").round(3),
        pl.col("median").round(3),
        pl.col("share_ge_0_5").round(3).alias("≥0.5"),
        pl.col("share_ge_0_8").round(3).alias("≥0.8"),
        pl.col("floor_mean").round(3).alias("floor"),
        pl.when(pl.col("model") == pl.col("reference"))
        .then(pl.lit("reference"))
        .when(pl.col("diff").is_null())
        .then(pl.lit("n/a"))
        .otherwise(interval)
        .alias("− reference [95% CI]"),
    )
