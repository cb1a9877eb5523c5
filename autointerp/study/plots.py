"""The study's figures as PNG files, drawn with matplotlib's object API (no pyplot state, no
display): the training loss curves, and the comparison of models."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

from autointerp.study.comparison import ALL_DEPTHS

_DPI = 120


def plot_loss_curves(trained: pl.DataFrame, path: Path) -> Path:
    """Train (dashed) and held-out (solid) loss against training tokens, one colour per model
    (TRAINED_MODEL_SCHEMA rows), with the unigram baseline's held-out loss."""
    figure = Figure(figsize=(7, 4.5), dpi=_DPI)
    axes = figure.subplots()
    for index, row in enumerate(trained.iter_rows(named=True)):
        curve = pl.DataFrame(row["curve"])
        colour = f"C{index}"
        label = f"{row['model']} (held-out {row['heldout_loss']:.3f})"
        axes.plot(curve["tokens"], curve["heldout_loss"], color=colour, label=label)
        axes.plot(curve["tokens"], curve["train_loss"], color=colour, linestyle="--", alpha=0.6)
    unigram = trained["unigram_loss"][0]
    axes.axhline(unigram, color="black", linestyle=":", label=f"unigram ({unigram:.3f})")
    axes.set_xlabel("training tokens")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("Study models: held-out (solid) and train (dashed) loss")
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_model_comparison(comparison: pl.DataFrame, path: Path) -> Path:
    """Per explainer/simulator pair, three panels: mean score (and, dotted, the chance floor) by
    relative depth; the difference from the reference with its 95% interval; shares of scores
    ≥ 0.5 and ≥ 0.8 and of dead neurons over all depths (MODEL_COMPARISON_SCHEMA rows)."""
    pairs = comparison.select("explainer", "simulator").unique(maintain_order=True).rows()
    figure = Figure(figsize=(15, 4.2 * len(pairs)), dpi=_DPI, layout="constrained")
    panels = figure.subplots(len(pairs), 3, squeeze=False)
    for (explainer, simulator), (by_depth, difference, shares) in zip(pairs, panels, strict=True):
        rows = comparison.filter(
            (pl.col("explainer") == explainer) & (pl.col("simulator") == simulator)
        )
        models = rows["model"].unique(maintain_order=True).to_list()
        depths = sorted(set(rows["depth"]) - {ALL_DEPTHS})
        positions = {depth: i for i, depth in enumerate([*depths, ALL_DEPTHS])}
        width = 0.8 / len(models)
        for index, model in enumerate(models):
            own = rows.filter(pl.col("model") == model)
            layered = own.filter(pl.col("depth") != ALL_DEPTHS).sort("depth")
            x = [positions[d] for d in layered["depth"]]
            by_depth.plot(x, layered["mean"], marker="o", color=f"C{index}", label=model)
            by_depth.plot(x, layered["floor_mean"], linestyle=":", color=f"C{index}")
            compared = own.filter(pl.col("diff").is_not_null())
            if not compared.is_empty():
                x = [positions[d] + (index - len(models) / 2) * width for d in compared["depth"]]
                difference.errorbar(
                    x,
                    compared["diff"],
                    yerr=[
                        compared["diff"] - compared["ci_low"],
                        compared["ci_high"] - compared["diff"],
                    ],
                    fmt="o",
                    color=f"C{index}",
                    capsize=3,
                    label=model,
                )
            overall = own.filter(pl.col("depth") == ALL_DEPTHS).row(0, named=True)
            values = [overall["share_ge_0_5"], overall["share_ge_0_8"], overall["dead_share"]]
            shares.bar(
                [i + (index - len(models) / 2 + 0.5) * width for i in range(3)],
                [v or 0.0 for v in values],
                width=width,
                color=f"C{index}",
                label=model,
            )
        reference = rows["reference"][0]
        by_depth.set_xticks(range(len(depths)), depths)
        by_depth.set_xlabel("relative depth")
        by_depth.set_ylabel("mean ev_correlation (dotted: chance floor)")
        by_depth.set_title(f"{explainer} / {simulator}", fontsize="medium")
        by_depth.legend(fontsize="small")
        difference.axhline(0.0, color="black", linewidth=0.8)
        difference.set_xticks(list(positions.values()), list(positions))
        difference.set_xlabel("relative depth")
        difference.set_ylabel(f"mean − {reference} (95% CI)")
        shares.set_xticks(range(3), ["score ≥ 0.5", "score ≥ 0.8", "dead"])
        shares.set_ylabel("share of neurons (all depths)")
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
