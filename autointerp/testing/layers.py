"""Synthetic layers in the stages' tables, without a model: a corpus of random words, and neurons
that each fire on one word, in the capture's neuron_records columns; then the offline baselines'
explanations, simulations and scores of them. For tests and benchmarks of what reads the tables
(the interchange formats) at any size, such as one SmolLM2 layer of 1,536 neurons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from autointerp.activations.excerpts import neuron_excerpts
from autointerp.activations.neuron_records import N_BANDS, QUANTILES
from autointerp.activations.splits import split_records
from autointerp.config.profiles import BUILTIN_EXPLAINERS, BUILTIN_SIMULATORS
from autointerp.config.settings import RecordsSpec
from autointerp.explain.explanations import explain
from autointerp.score.scores import score
from autointerp.simulate.simulations import simulate
from autointerp.storage.columns import nested_lists

WORDS = [
    " the", " king", " queen", " walked", " garden", " castle", " love", " war", " bread",
    " summer", " day", " river", " ship", " sea", " crown", " sword", " night", " star",
    " moon", " sun", " house", " friend", " town", " road", " horse", " bell", " fire",
    " stone", " gold", " rain", ",", ".",
]  # fmt: skip


@dataclass(frozen=True)
class Layers:
    corpus: pl.DataFrame
    records: pl.DataFrame
    top_k_excerpts: pl.DataFrame
    explanations: pl.DataFrame
    simulations: pl.DataFrame
    scores: pl.DataFrame


def synthetic_records(
    layers: Sequence[int],
    neurons: int,
    spec: RecordsSpec,
    *,
    tokens: int = 64,
    excerpts: int = 2000,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(corpus, neuron_records): neuron n fires on WORDS[n % len(WORDS)] with a strength that
    varies by excerpt, over faint noise; each neuron's excerpts are drawn from the corpus, its
    strongest `top_k` are its top records and the rest its random, reference and band samples."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, len(WORDS), (excerpts, tokens))
    words = np.asarray(WORDS, dtype=object)
    corpus = pl.DataFrame(
        {
            "excerpt_id": pl.Series(np.arange(excerpts), dtype=pl.Int64),
            "text": ["".join(row) for row in words[token_ids]],
            "tokens": nested_lists(words[token_ids].ravel(), np.full(excerpts, tokens)),
            "token_ids": nested_lists(
                token_ids.astype(np.int32).ravel(), np.full(excerpts, tokens)
            ),
            "source": ["synthetic"] * excerpts,
            "license": ["CC0-1.0"] * excerpts,
        }
    ).cast({"tokens": pl.List(pl.Utf8)})
    per_kind = {"top": spec.top_k, "random": spec.random_k, "reference": spec.reference_k}
    drawn = sum(per_kind.values()) + N_BANDS * spec.quantile_k
    rows = len(layers) * neurons
    chosen = np.stack([rng.choice(excerpts, drawn, replace=False) for _ in range(rows)])
    trigger = (np.arange(rows) % neurons % len(WORDS))[:, None, None]
    strength = rng.gamma(2.0, 2.0, (rows, drawn, 1))
    acts = (token_ids[chosen] == trigger) * strength + rng.random((rows, drawn, tokens)) * 0.05
    acts = acts.astype(np.float32)
    order = np.argsort(-acts.max(axis=2), axis=1, kind="stable")  # strongest first
    chosen = np.take_along_axis(chosen, order, axis=1)
    acts = np.take_along_axis(acts, order[..., None], axis=1)
    columns: dict[str, pl.Series] = {
        "layer": pl.Series(np.repeat(layers, neurons), dtype=pl.Int32),
        "neuron": pl.Series(np.tile(np.arange(neurons), len(layers)), dtype=pl.Int32),
        "mean": pl.Series(acts.mean(axis=(1, 2)), dtype=pl.Float64),
        "variance": pl.Series(acts.var(axis=(1, 2)), dtype=pl.Float64),
        "skewness": pl.Series(rng.normal(3, 1, rows), dtype=pl.Float64),
        "kurtosis": pl.Series(rng.normal(20, 5, rows), dtype=pl.Float64),
        "max_activation": pl.Series(acts[:, 0].max(axis=1), dtype=pl.Float64),
        "quantile_boundaries": nested_lists(
            np.sort(rng.random((rows, len(QUANTILES))), axis=1).ravel(),
            np.full(rows, len(QUANTILES)),
        ),
    }
    start = 0
    for name, k in per_kind.items():
        span = slice(start, start + k)
        columns[f"{name}_excerpt_ids"] = nested_lists(chosen[:, span].ravel(), np.full(rows, k))
        if name == "top":
            columns["top_max_activations"] = nested_lists(
                acts[:, span].max(axis=2).ravel(), np.full(rows, k)
            )
        columns[f"{name}_activations"] = nested_lists(
            acts[:, span].ravel(), np.full(rows * k, tokens), np.full(rows, k)
        )
        start += k
    bands = slice(start, None)
    columns["quantile_excerpt_ids"] = nested_lists(
        chosen[:, bands].ravel(), np.full(rows * N_BANDS, spec.quantile_k), np.full(rows, N_BANDS)
    )
    columns["quantile_activations"] = nested_lists(
        acts[:, bands].ravel(),
        np.full(rows * N_BANDS * spec.quantile_k, tokens),
        np.full(rows * N_BANDS, spec.quantile_k),
        np.full(rows, N_BANDS),
    )
    return corpus, pl.DataFrame(columns)


def synthetic_layers(
    layers: Sequence[int], neurons: int, spec: RecordsSpec, **options: int
) -> Layers:
    """`synthetic_records`, split, explained by the token-statistics baseline, simulated by the
    lexical baseline and scored: every table an export reads."""
    corpus, records = synthetic_records(layers, neurons, spec, **options)
    top_k = split_records(records)
    excerpts = neuron_excerpts(top_k, corpus)
    (explainer,) = BUILTIN_EXPLAINERS.values()
    (simulator,) = BUILTIN_SIMULATORS.values()
    explanations, _ = explain(explainer, excerpts, client=None)
    simulations, _ = simulate(simulator, explanations, excerpts, client=None)
    return Layers(
        corpus=corpus,
        records=records,
        top_k_excerpts=top_k,
        explanations=explanations,
        simulations=simulations,
        scores=score(simulations, calibrate=False),
    )
