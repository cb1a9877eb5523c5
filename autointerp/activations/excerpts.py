"""A neuron's excerpts as every stage reads them: the top_k_excerpts rows joined with their
token strings from the corpus, grouped per neuron, split and kind."""

from __future__ import annotations

import polars as pl

from autointerp.activations.data_model import ActivationRecord, NeuronId, peak_activation
from autointerp.activations.splits import split_records
from autointerp.errors import InputError

# Neurons per chunk when records become excerpts: exploding, joining and sorting a whole SmolLM2
# layer at once raises the peak by about 300 MB to make a 33 MB frame.
NEURONS_PER_CHUNK = 256


def excerpts_of_records(
    records: pl.DataFrame, corpus: pl.DataFrame, neurons_per_chunk: int = NEURONS_PER_CHUNK
) -> pl.DataFrame:
    """`neuron_excerpts` of `split_records(records)`, checked against the records' `corpus_id`
    where they name one, built a chunk of neurons at a time: the same rows in the same order
    (splits are per neuron), at a fraction of the peak."""
    records = records.sort("layer", "neuron")
    parts = []
    for part in records.iter_slices(neurons_per_chunk) if records.height else [records]:
        splits = split_records(part)
        if "corpus_id" in part.columns:
            corpora = part.select("layer", "corpus_id").unique("layer")
            splits = splits.join(corpora, on="layer", how="left")
        parts.append(neuron_excerpts(splits, corpus))
    return pl.concat(parts)


def neuron_excerpts(top_k_excerpts: pl.DataFrame, corpus: pl.DataFrame) -> pl.DataFrame:
    """top_k_excerpts with each excerpt's token strings (`tokens`) from the corpus: what every
    stage reads. An excerpt missing from the corpus, or whose token count differs from its
    activation count, means the two tables do not belong together: InputError."""
    if "corpus_id" in top_k_excerpts.columns and "corpus_id" in corpus.columns:
        captured = set(top_k_excerpts["corpus_id"].drop_nulls().unique())
        current = set(corpus["corpus_id"].unique())
        if captured - current:
            layers = sorted(top_k_excerpts["layer"].unique())
            raise InputError(
                f"layers {layers} were captured over {sorted(captured)}, not over the current "
                f"corpus {sorted(current)}: run `autointerp run --layers ...` for them again"
            )
        corpus = corpus.drop("corpus_id")
    joined = top_k_excerpts.join(
        corpus.select("excerpt_id", "tokens"), on="excerpt_id", how="left"
    ).sort("layer", "neuron", "split", "kind", "rank")
    missing = joined.filter(pl.col("tokens").is_null())["excerpt_id"].unique()
    if len(missing):
        raise InputError(
            f"{len(missing)} excerpts of top_k_excerpts are not in the corpus (e.g. "
            f"{sorted(missing.to_list())[:5]}): they were captured from another corpus"
        )
    mismatched = joined.filter(pl.col("tokens").list.len() != pl.col("activations").list.len())
    if mismatched.height:
        row = mismatched.row(0, named=True)
        raise InputError(
            f"{mismatched.height} excerpts have not one activation per token: excerpt "
            f"{row['excerpt_id']} has {len(row['tokens'])} tokens and "
            f"{len(row['activations'])} activations (captured from another corpus?)"
        )
    return joined


def neurons_of(excerpts: pl.DataFrame) -> list[NeuronId]:
    """The neurons of an excerpts frame, sorted."""
    pairs = excerpts.select("layer", "neuron").unique().sort("layer", "neuron")
    return [NeuronId(layer, neuron) for layer, neuron in pairs.iter_rows()]


def records_by_neuron(
    excerpts: pl.DataFrame, *, split: str, kind: str
) -> dict[NeuronId, list[ActivationRecord]]:
    """Each neuron's records of one split and kind, in rank order (strongest first for top)."""
    chosen = excerpts.filter((pl.col("split") == split) & (pl.col("kind") == kind)).sort(
        "layer", "neuron", "rank"
    )
    records: dict[NeuronId, list[ActivationRecord]] = {}
    for layer, neuron, tokens, activations in chosen.select(
        "layer", "neuron", "tokens", "activations"
    ).iter_rows():
        records.setdefault(NeuronId(layer, neuron), []).append(
            ActivationRecord(tokens=tokens, activations=activations)
        )
    return records


def train_peaks(excerpts: pl.DataFrame) -> dict[NeuronId, float]:
    """Each neuron's largest relu'd activation over its train top records: the scale the
    explainer saw its activations on."""
    return {
        neuron: peak_activation(records)
        for neuron, records in records_by_neuron(excerpts, split="train", kind="top").items()
    }


def top_mean_tokens(records: pl.DataFrame, corpus: pl.DataFrame) -> dict[NeuronId, list[str]]:
    """Each neuron's tokens ranked by mean activation over the corpus, as strings: the records'
    `top_mean_token_ids` (captured when [records] top_mean_tokens > 0) read through the
    corpus's own token strings."""
    if "top_mean_token_ids" not in records.columns:
        return {}
    strings = (
        corpus.select(token_id="token_ids", token="tokens")
        .explode("token_id", "token")
        .unique("token_id")
    )
    ranked = (
        records.select("layer", "neuron", token_id="top_mean_token_ids")
        .with_columns(rank=pl.int_ranges(pl.col("token_id").list.len()))
        .explode("token_id", "rank")
        .join(strings, on="token_id", how="left")
        .sort("layer", "neuron", "rank")
    )
    out: dict[NeuronId, list[str]] = {}
    for layer, neuron, token in ranked.select("layer", "neuron", "token").iter_rows():
        out.setdefault(NeuronId(layer, neuron), []).append(token)
    return out
