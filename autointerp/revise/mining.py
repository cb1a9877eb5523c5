"""Mining: where a round looks for counterexamples in the corpus. Candidates are a neuron's
excerpts outside its scoring splits (its train top records and quantile-band samples); its
calibration, valid and test excerpts are held out, by id and by identical tokens."""

from __future__ import annotations

import polars as pl

from autointerp.activations.splits import SCORING_SPLITS


def mining_candidates(
    excerpts: pl.DataFrame,
    *,
    neuron_records: pl.DataFrame | None = None,
    corpus: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Excerpts a neuron's counterexamples may be mined from: its train top records (from a
    neuron_excerpts frame) and, given the neuron_records table and the corpus, its
    quantile-band samples. Columns: layer, neuron, excerpt_id, tokens, activations. Scoring
    excerpts among them are left for `mine_counterexamples` to filter out."""
    columns = ("layer", "neuron", "excerpt_id", "tokens", "activations")
    train = excerpts.filter(pl.col("split") == "train").select(*columns)
    frames = [train.with_columns(pl.col("activations").cast(pl.List(pl.Float32)))]
    if neuron_records is not None and corpus is not None:
        bands = (
            neuron_records.select(
                "layer",
                "neuron",
                excerpt_id="quantile_excerpt_ids",
                activations="quantile_activations",
            )
            .explode("excerpt_id", "activations")
            .explode("excerpt_id", "activations")
            .drop_nulls("excerpt_id")
            .join(corpus.select("excerpt_id", "tokens"), on="excerpt_id", how="inner")
        )
        frames.append(
            bands.select(*columns).cast(
                {"layer": pl.Int32, "neuron": pl.Int32, "excerpt_id": pl.Int64}
            )
        )
    return (
        pl.concat([f.cast({"activations": pl.List(pl.Float32)}) for f in frames])
        .unique(["layer", "neuron", "excerpt_id"], keep="first", maintain_order=True)
        .sort("layer", "neuron", "excerpt_id")
    )


def held_out_excerpts(excerpts: pl.DataFrame) -> pl.DataFrame:
    """Each neuron's calibration, valid and test excerpts (layer, neuron, excerpt_id, tokens):
    what no counterexample of that neuron may come from."""
    return excerpts.filter(pl.col("split").is_in(SCORING_SPLITS)).select(
        "layer", "neuron", "excerpt_id", "tokens"
    )


def _text_key(tokens: pl.Expr) -> pl.Expr:
    return tokens.list.join("\x1f")


def allowed_candidates(
    current: pl.DataFrame, candidates: pl.DataFrame, excluded: pl.DataFrame
) -> pl.DataFrame:
    """The candidates of the neurons in `current` that are not held out: neither one of the
    neuron's `excluded` excerpt ids nor the very same tokens as one (`held_out_excerpts`)."""
    keys = ["layer", "neuron"]
    ours = candidates.join(current.select(keys), on=keys, how="semi")
    held = excluded.select(*keys, "excerpt_id", key=_text_key(pl.col("tokens")))
    allowed = ours.join(held.select(*keys, "excerpt_id"), on=[*keys, "excerpt_id"], how="anti")
    allowed = allowed.with_columns(key=_text_key(pl.col("tokens")))
    return (
        allowed.join(held.select(*keys, "key"), on=[*keys, "key"], how="anti")
        .drop("key")
        .sort(*keys, "excerpt_id")
    )
