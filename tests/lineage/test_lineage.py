"""One neuron's score traced back through simulations, explanations, LLM calls, excerpts and the
Delta versions and runs that wrote them; and a stored score reproduced by time travel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from autointerp.activations.excerpts import neuron_excerpts, records_by_neuron
from autointerp.activations.splits import split_records
from autointerp.errors import InputError
from autointerp.explain.explainer_prompt import build_explanation_request
from autointerp.lineage.read import reproduce_score, revision_history, score_lineage
from autointerp.lineage.render import render_revisions, render_text, to_json
from autointerp.llm.cache import request_hash
from autointerp.llm.endpoint import Endpoint
from autointerp.llm.requests import LLMRequest
from autointerp.score.scores import score
from autointerp.simulate.simulations import scoring_pairs
from autointerp.simulate.simulator_prompt import build_chat_request
from autointerp.storage.delta import read_table, write_partitions
from autointerp.storage.hashing import canonical_json
from autointerp.storage.schemas import (
    CALLS_SCHEMA,
    COUNTEREXAMPLES_SCHEMA,
    EXPLANATIONS_SCHEMA,
    REVISIONS_SCHEMA,
)
from autointerp.testing.tables import simulations_frame

PREFIX = "tiny"


def model_root(folder) -> str:
    """The URI of the test model's tables under `folder`."""
    return f"{folder}/{PREFIX}"


LAYERS = (3, 2)  # layer 3 is written first, so a later commit (layer 2) did not write it
NEURONS = 3
TOKENS = 8
WORDS = ["the", " king", " and", " queen", " walked", " in", " garden", " of", " love", " war"]
EXPLAINER = Endpoint("gpt-4o-mini", api_key_env=None)
SIMULATOR = Endpoint("llama-sim", base_url="http://127.0.0.1:8000/v1", api_key_env=None)


@dataclass
class Built:
    root: Path
    excerpts: pl.DataFrame  # neuron_excerpts of every layer
    simulations: pl.DataFrame
    scores: pl.DataFrame


def write(root: Path, table: str, frame: pl.DataFrame, run: str, layer: int | None) -> int:
    return write_partitions(
        str(root / PREFIX / table),
        frame.filter(pl.col("layer") == layer) if layer is not None else frame,
        partition_column="layer" if layer is not None else None,
        partitions=[layer] if layer is not None else None,
        commit_metadata={
            "dagster_run_id": run,
            "dagster_asset_key": f"{PREFIX}/{table}",
            "dagster_code_version": f"{table}-1",
        },
    )


def write_layers(root: Path, table: str, frame: pl.DataFrame, run: str) -> int:
    """One commit per layer, as one run per partition writes them; the last version."""
    return [write(root, table, frame, f"{run}-{layer}", layer) for layer in LAYERS][-1]


def corpus(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    tokens = [[WORDS[i] for i in rng.integers(0, len(WORDS), TOKENS)] for _ in range(n)]
    return pl.DataFrame(
        {
            "excerpt_id": pl.Series(range(n), dtype=pl.Int64),
            "text": ["".join(t) for t in tokens],
            "tokens": tokens,
            "source": ["test"] * n,
            "license": ["public domain"] * n,
        }
    )


def neuron_records(n_excerpts: int) -> pl.DataFrame:
    """Per neuron: 8 top excerpts (2 per split) and 6 random ones, as capture writes them."""
    rng = np.random.default_rng(1)
    rows = []
    for layer in LAYERS:
        for neuron in range(NEURONS):
            ids = rng.choice(n_excerpts, 14, replace=False).tolist()
            acts = rng.gamma(1.0, 1.0, (14, TOKENS)).astype(np.float32)
            order = np.argsort(-acts[:8].max(axis=1))
            rows.append(
                {
                    "layer": layer,
                    "neuron": neuron,
                    "max_activation": float(acts.max()),
                    "top_excerpt_ids": [ids[i] for i in order],
                    "top_activations": [acts[i].tolist() for i in order],
                    "random_excerpt_ids": ids[8:],
                    "random_activations": acts[8:].tolist(),
                }
            )
    return pl.DataFrame(rows).with_columns(pl.col("layer", "neuron").cast(pl.Int32))


def explanations_and_calls(excerpts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A baseline explainer (no calls) and an LLM one: one call per neuron, two samples."""
    rows, calls = [], []
    for neuron_id, records in records_by_neuron(excerpts, split="train", kind="top").items():
        keys = {"layer": neuron_id.layer, "neuron": neuron_id.neuron}
        rows.append(
            {**keys, "explainer": "stats", "explainer_hash": "s0", "sample": 0}
            | {"explanation": "the word king", "prompt_hash": None, "call_ids": []}
        )
        request = build_explanation_request(records)
        payload = LLMRequest.chat(request.messages, n=2, temperature=1.0).payload(EXPLAINER)
        call_id = request_hash(payload)
        texts = [f"words about love ({neuron_id})", f"royalty ({neuron_id})"]
        for sample, text in enumerate(texts):
            rows.append(
                {**keys, "explainer": "gpt", "explainer_hash": "g0", "sample": sample}
                | {"explanation": text, "prompt_hash": request.prompt_hash, "call_ids": [call_id]}
            )
        calls.append(call_row(call_id, payload, texts) | {"layer": neuron_id.layer})
    explanations = pl.DataFrame(rows, schema=EXPLANATIONS_SCHEMA)  # error: null
    return explanations, pl.DataFrame(calls).with_columns(
        pl.col("layer").cast(pl.Int32), stage=pl.lit("explanations"), profile=pl.lit("gpt")
    )


def call_row(call_id: str, payload: dict, texts: list[str]) -> dict:
    return {
        "call_id": call_id,
        "request_hash": call_id,
        "kind": payload["kind"],
        "model": payload["model"],
        "endpoint": payload["base_url"],
        "prompt_tokens": 900,
        "completion_tokens": 12,
        "cost_usd": None,
        "latency_s": 0.4,
        "status": "ok",
        "attempts": 1,
        "error": None,
        "cached": False,
        "request_json": canonical_json(payload),
        "response_texts": texts,
    }


def simulations_and_calls(
    explanations: pl.DataFrame, excerpts: pl.DataFrame, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """An LLM simulator's rows: one call per (explanation, excerpt); expected values seeded."""
    pairs = scoring_pairs(explanations, excerpts)
    rng = np.random.default_rng(seed)
    expected, call_ids, calls = [], [], []
    for explanation, tokens, layer in pairs.select("explanation", "tokens", "layer").iter_rows():
        request = build_chat_request(explanation, tokens)
        payload = LLMRequest.chat(request.messages, **request.params).payload(SIMULATOR)
        values = rng.integers(0, 11, len(tokens)).astype(float).tolist()
        expected.append(values)
        call_ids.append([request_hash(payload)])
        text = "\n".join(f"{t}\t{int(v)}" for t, v in zip(tokens, values, strict=True))
        calls.append(call_row(request_hash(payload), payload, [text]) | {"layer": layer})
    simulations = simulations_frame(
        {
            **{k: pairs[k] for k in ("layer", "neuron", "explainer", "explainer_hash", "sample")},
            "simulator": "llama",
            "simulator_hash": "l0",
            **{k: pairs[k] for k in ("excerpt_id", "split", "kind")},
            "true_activations": pairs["activations"],
            "expected_activations": expected,
            "call_ids": call_ids,
            "error": None,
        },
    )
    calls_frame = (
        pl.DataFrame(calls)
        .unique("call_id", keep="first")
        .with_columns(
            pl.col("layer").cast(pl.Int32), stage=pl.lit("simulations"), profile=pl.lit("llama")
        )
    )
    return simulations, calls_frame.select("layer", *CALLS_SCHEMA, "stage", "profile")


def build(root: Path, *, record_versions: bool = True) -> Built:
    texts = corpus(60)
    corpus_version = write(root, "corpus", texts, "run-corpus", None)
    records = neuron_records(texts.height)
    records_version = write_layers(root, "neuron_records", records, "run-records")
    top_k = split_records(records)
    top_k_version = write_layers(root, "top_k_excerpts", top_k, "run-split")
    excerpts = neuron_excerpts(top_k, texts)
    explanations, explainer_calls = explanations_and_calls(excerpts)
    explanations_version = write_layers(root, "explanations", explanations, "run-explain")
    explainer_calls_version = write_layers(root, "explainer_calls", explainer_calls, "run-explain")
    simulations, simulator_calls = simulations_and_calls(explanations, excerpts, seed=2)
    simulations_version = write_layers(root, "simulations", simulations, "run-simulate")
    simulator_calls_version = write_layers(root, "simulator_calls", simulator_calls, "run-simulate")
    scores = score(simulations, calibrate=False)
    if record_versions:
        scores = scores.with_columns(
            neuron_records_version=pl.lit(records_version, pl.Int64),
            top_k_excerpts_version=pl.lit(top_k_version, pl.Int64),
            explanations_version=pl.lit(explanations_version, pl.Int64),
            simulations_version=pl.lit(simulations_version, pl.Int64),
            corpus_version=pl.lit(corpus_version, pl.Int64),
            explainer_calls_version=pl.lit(explainer_calls_version, pl.Int64),
            simulator_calls_version=pl.lit(simulator_calls_version, pl.Int64),
            dagster_run_id=pl.lit("run-score"),
            code_version=pl.lit("scores-1-abc"),
        )
    write_layers(root, "scores", scores, "run-score")
    return Built(root, excerpts, simulations, scores)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(tmp_path_factory.mktemp("lineage"))


def test_the_chain_of_one_llm_explanation(built: Built) -> None:
    lineage = score_lineage(model_root(built.root), 3, 1, explainer="gpt")
    assert [(c.explainer, c.sample, c.simulator) for c in lineage.chains] == [
        ("gpt", 0, "llama"),
        ("gpt", 1, "llama"),
    ]
    chain = lineage.chains[1]
    assert chain.dagster_run_id == "run-score" and chain.code_version == "scores-1-abc"
    assert {(s.split, s.scored_on) for s in chain.scores} == {
        (split, on)
        for split in ("calibration", "valid", "test")
        for on in ("top", "random", "top_and_random")
    }
    # The explanation, the call that produced it, and the prompt as it was sent.
    assert chain.explanation is not None and chain.explanation.text == "royalty (3/1)"
    [call] = chain.explainer_calls
    assert call.call_id == chain.explanation.call_ids[0]
    assert call.model == "gpt-4o-mini" and call.endpoint is None
    assert call.params == {"n": 2, "temperature": 1.0}
    assert call.response_texts == ["words about love (3/1)", "royalty (3/1)"]
    # The explainer saw the neuron's train top excerpts, strongest first, with their text.
    mine = built.excerpts.filter(pl.col("layer") == 3, pl.col("neuron") == 1)
    train = mine.filter(pl.col("split") == "train").sort("rank")
    assert [e.excerpt_id for e in chain.shown_excerpts] == train["excerpt_id"].to_list()
    assert all(e.text and e.text.split()[0] in call.prompt for e in chain.shown_excerpts)
    # Scored on exactly the excerpts the score rows pooled, never the train ones.
    pooled = {i for s in chain.scores for i in s.excerpt_ids}
    assert {e.excerpt_id for e in chain.simulations} == pooled
    assert not pooled & set(train["excerpt_id"].to_list())
    assert all(e.text is not None and len(e.true_activations) == TOKENS for e in chain.simulations)
    assert len(chain.simulator_calls) == len(chain.simulations)
    assert all(c.endpoint == "http://127.0.0.1:8000/v1" for c in chain.simulator_calls)


def test_each_table_names_its_version_and_the_run_that_wrote_the_layer(built: Built) -> None:
    chain = score_lineage(model_root(built.root), 3, 1, explainer="gpt").chains[0]
    reads = {read.table: read for read in chain.tables}
    assert set(reads) == {
        "scores",
        "simulations",
        "explanations",
        "explainer_calls",
        "simulator_calls",
        "top_k_excerpts",
        "neuron_records",
        "corpus",
    }
    # Layer 3, then layer 2, each its own commit: version 1 holds layer 3 as commit 0 wrote it.
    for table in ("simulations", "top_k_excerpts", "neuron_records", "explanations"):
        assert reads[table].recorded and reads[table].version == 1
        writer = reads[table].written_by
        assert writer is not None and writer.version == 0
        assert writer.dagster_run_id.endswith("-3") and writer.code_version == f"{table}-1"
    assert not reads["scores"].recorded and reads["scores"].written_by.dagster_run_id == (
        "run-score-3"
    )
    # The corpus and the call audits are read at the versions the score rows recorded too.
    assert all(reads[table].recorded for table in ("corpus", "explainer_calls", "simulator_calls"))
    assert reads["corpus"].written_by.dagster_run_id == "run-corpus"


def test_calls_rewritten_later_are_read_as_the_score_saw_them(tmp_path: Path) -> None:
    build(tmp_path)
    calls = read_table(str(tmp_path / PREFIX / "explainer_calls"))
    rewritten = calls.with_columns(response_texts=pl.lit(["rewritten"], pl.List(pl.Utf8)))
    write_layers(tmp_path, "explainer_calls", rewritten, "run-later")
    chain = score_lineage(model_root(tmp_path), 3, 1, explainer="gpt").chains[1]
    [call] = chain.explainer_calls
    assert call.response_texts == ["words about love (3/1)", "royalty (3/1)"]


def test_every_explainer_of_the_neuron_without_a_filter(built: Built) -> None:
    chains = score_lineage(model_root(built.root), 2, 0).chains
    assert [(c.explainer, c.sample) for c in chains] == [("gpt", 0), ("gpt", 1), ("stats", 0)]
    stats = chains[2]
    assert stats.explanation.call_ids == [] and stats.explainer_calls == []


def test_render_and_json(built: Built) -> None:
    lineage = score_lineage(model_root(built.root), 3, 1, explainer="gpt")
    text = render_text(lineage)
    chain = lineage.chains[0]
    for expected in (
        "Neuron 3/1 of tiny",
        "explainer gpt@g0 sample 0 -> simulator llama@l0",
        "words about love (3/1)",
        "[system]",
        chain.explainer_calls[0].call_id,
        "run-simulate-3",
        "recorded on the score",
    ):
        assert expected in text
    data = json.loads(json.dumps(to_json(lineage), allow_nan=False))
    assert data["chains"][0]["explanation"]["text"] == "words about love (3/1)"
    assert data["chains"][0]["tables"][1]["written_by"]["dagster_run_id"] == "run-simulate-3"


def test_reproduced_exactly_after_the_simulations_are_rewritten(tmp_path: Path) -> None:
    built = build(tmp_path)
    explanations = read_table(str(tmp_path / PREFIX / "explanations"))
    resimulated, _ = simulations_and_calls(explanations, built.excerpts, seed=99)
    write(tmp_path, "simulations", resimulated, "run-resimulate", 3)
    for neuron in range(NEURONS):
        for explainer in ("gpt", "stats"):
            stored, recomputed = reproduce_score(
                model_root(tmp_path), 3, neuron, explainer, "llama"
            )
            assert stored.height == 9 * (2 if explainer == "gpt" else 1)
            assert stored.equals(recomputed)  # exactly: every float, NaN included
    # The test means something: the latest simulations score differently.
    latest = score(resimulated.filter(pl.col("neuron") == 0), calibrate=False)
    assert not latest.equals(stored.filter(pl.col("neuron") == 0).select(latest.columns))
    chain = score_lineage(model_root(tmp_path), 3, 0, explainer="gpt").chains[0]
    simulations = next(read for read in chain.tables if read.table == "simulations")
    assert simulations.version == 1 and simulations.written_by.dagster_run_id == "run-simulate-3"


def test_scores_without_lineage_columns_read_the_latest(tmp_path: Path) -> None:
    build(tmp_path, record_versions=False)
    chain = score_lineage(model_root(tmp_path), 3, 2, explainer="gpt").chains[0]
    assert chain.dagster_run_id is None and chain.code_version is None
    assert not any(read.recorded for read in chain.tables)
    assert "not recorded" in render_text(score_lineage(model_root(tmp_path), 3, 2))
    stored, recomputed = reproduce_score(model_root(tmp_path), 3, 2, "gpt", "llama")
    assert stored.equals(recomputed)


def test_missing_tables_upstream_leave_their_part_empty(tmp_path: Path) -> None:
    simulations = build(tmp_path).simulations
    root = tmp_path / "scores-only"
    write(root, "scores", score(simulations, calibrate=False), "run", 3)
    chain = score_lineage(model_root(root), 3, 0, explainer="stats").chains[0]
    assert chain.explanation is None and chain.simulations == [] and chain.shown_excerpts == []
    assert all(read.version is None for read in chain.tables if read.table != "scores")
    assert "not materialized" in render_text(score_lineage(model_root(root), 3, 0))


@pytest.mark.parametrize(
    ("layer", "neuron", "explainer", "message"),
    [
        (3, 99, None, "no score for neuron 99 of layer 3"),
        (7, 0, None, "no score for neuron 0 of layer 7"),
        (3, 0, "claude", "no score of explainer 'claude' for neuron 0 of layer 3; it has: gpt"),
    ],
)
def test_no_score_is_a_clear_input_error(
    built: Built, layer: int, neuron: int, explainer: str | None, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        score_lineage(model_root(built.root), layer, neuron, explainer)


def test_unmaterialized_scores_and_unknown_simulator(built: Built, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has not been materialized"):
        score_lineage(model_root(tmp_path), 3, 0)
    with pytest.raises(InputError, match="no score of simulator 'gpt-sim'"):
        reproduce_score(model_root(built.root), 3, 0, "gpt", "gpt-sim")


def _round_tables(root: str) -> None:
    """Round 1 of neuron 0 in layer 3, by two explainers; one counterexample's generation
    failed, so it has no expected kind, text or miss."""
    revised, counter = [], []
    for explainer in ("a", "b"):
        common = {"layer": 3, "neuron": 0, "explainer": explainer, "explainer_hash": "h"}
        revised.append(
            common
            | {"round": 1, "explanation": f"{explainer} old", "previous_explanation": "old"}
            | {"revised_explanation": f"{explainer} new", "kept": False, "call_ids": []}
        )
        counter.append(
            common
            | {"round": 1, "source": "generated", "expected": None, "text": None}
            | {"miss": None, "call_ids": ["c"], "error": "generation: HTTP 500"}
        )
    for name, rows, schema in (
        ("revised_explanations_r1", revised, REVISIONS_SCHEMA),
        ("counterexamples_r1", counter, COUNTEREXAMPLES_SCHEMA),
    ):
        write_partitions(
            f"{root}/{name}",
            pl.DataFrame(rows, schema=schema),
            partition_column="layer",
            partitions=[3],
            commit_metadata={},
        )


def test_revision_rounds_render_missing_values_and_filter_by_explainer(tmp_path):
    root = model_root(tmp_path)
    _round_tables(root)
    assert {r.explainer for r in revision_history(root, 3, 0)} == {"a", "b"}
    rounds = revision_history(root, 3, 0, "b")
    assert [r.explainer for r in rounds] == ["b"]
    text = render_revisions(rounds)
    assert "round 1 (b): not kept" in text and "(generation: HTTP 500)" in text
