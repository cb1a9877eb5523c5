"""Revision rounds: what one round costs per neuron next to the first explanation, and, when the
default project's tables exist, what the rounds did to its scores.

1. LLM path, on a synthetic layer (neuron i fires on its own word; excerpts built as the tests
   build them) against the scripted OpenAI-compatible server in a child process, with a tiny
   random model giving the true activations of the generated counterexamples. Per neuron, LLM
   calls and prompt/completion tokens (`Usage.of` over the call results; the scripted server
   counts tokens with its own word-and-punctuation split, so ratios mean more than absolutes):
   (a) the first explanation alone, (b) (a) plus its simulation on the scoring excerpts
   (chat-logprobs: one call per excerpt), (c) one revision round: counterexample generation,
   counterexample simulation (generated and mined), the revision, and its re-simulation; and the
   ratios (c)/(a) and (c)/(b). A rerun of the round over the same response cache: its HTTP calls
   (goal: 0).
2. Offline rounds on real data: if `make demo` wrote the default model's `revision_summary`, the
   mean test score per round (round 0: before any revision) and the share of neurons improved,
   for at least three layers. If it is absent, the result says so (the demo takes minutes).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.activations.excerpts import neuron_excerpts
from autointerp.activations.splits import split_records
from autointerp.activations.subject_model import load_subject_model
from autointerp.config.profiles import explainer_profile, simulator_profile
from autointerp.config.settings import load_settings
from autointerp.explain.explainer_prompt import EXPLAINER_SYSTEM_MESSAGE
from autointerp.explain.explanations import explain
from autointerp.llm.accounting import Usage
from autointerp.llm.client import LLMClient
from autointerp.llm.requests import CallResult
from autointerp.revise.counterexamples import find_counterexamples
from autointerp.revise.generation import GENERATION_SYSTEM_MESSAGE
from autointerp.revise.revisions import REVISION_SYSTEM_MESSAGE, current_explanations, revise_round
from autointerp.score.scores import score
from autointerp.simulate.simulations import simulate
from autointerp.simulate.simulator_prompt import CHAT_SYSTEM_MESSAGE
from autointerp.storage.delta import read_table, table_version
from autointerp.testing.llm_server import (
    LLMServer,
    chat_simulator_handler,
    explained_word,
    no_sleep,
)
from autointerp.testing.tiny_models import make_tiny_model, tiny_spec
from benchmarks.common import save
from benchmarks.llm import ServerProcess

LAYER = 0
WORDS = [
    " cat", " dog", " sun", " moon", " king", " river", " bread", " music", " money", " war",
    " rain", " ship", " garden", " doctor", " winter", " engine", " letter", " forest",
    " judge", " horse", " castle", " train", " apple", " storm",
]  # fmt: skip
FILLER = [" the", " old", " man", " walked", " into", " town", " and", " saw", " a", " house"]
FILLER += [" by", " under", " grey", " sky", " with", " his", " friend", ",", "."]
LENGTH = 64  # the default corpus's excerpt length
TOP_K, RANDOM_K = 20, 15  # the default capture's records per neuron
OFFLINE_LAYERS = (0, 15, 29)


# --- the synthetic layer ------------------------------------------------------------------------


def make_excerpts(neurons: int, seed: int = 0) -> pl.DataFrame:
    """A neuron_excerpts frame: neuron i fires (4 + a little by excerpt) on WORDS[i], which its
    TOP_K excerpts hold twice among filler words, and faintly (noise below 0.05) elsewhere; its
    random records are drawn from the other excerpts."""
    if neurons > len(WORDS):
        raise ValueError(f"at most {len(WORDS)} neurons")
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    tokens, owner = [], []
    for neuron in range(neurons):
        for _ in range(TOP_K):
            body = [rng.choice(FILLER) for _ in range(LENGTH)]
            for position in rng.sample(range(LENGTH), 2):
                body[position] = WORDS[neuron]
            tokens.append(body)
            owner.append(neuron)
    records = []
    for neuron in range(neurons):
        acts = [
            np.where(
                np.asarray(t) == WORDS[neuron],
                4.0 + 0.01 * eid,
                noise.random(LENGTH) * 0.05,
            ).astype(np.float32)
            for eid, t in enumerate(tokens)
        ]
        top = sorted((e for e in range(len(tokens)) if owner[e] == neuron), key=lambda e: -e)
        others = rng.sample([e for e in range(len(tokens)) if owner[e] != neuron], RANDOM_K)
        records.append(
            {
                "layer": LAYER,
                "neuron": neuron,
                "top_excerpt_ids": top,
                "top_activations": [acts[e].tolist() for e in top],
                "random_excerpt_ids": others,
                "random_activations": [acts[e].tolist() for e in others],
            }
        )
    corpus = pl.DataFrame(
        {
            "excerpt_id": pl.Series(range(len(tokens)), dtype=pl.Int64),
            "text": ["".join(t) for t in tokens],
            "tokens": tokens,
            "token_ids": [[0] * LENGTH for _ in tokens],
        }
    )
    return neuron_excerpts(split_records(pl.DataFrame(records)), corpus)


# --- the scripted server, in its own process ---------------------------------------------------

_simulate = chat_simulator_handler()  # 8 (p = 0.75) on the explained word, 1 elsewhere


def _top_word(target: str) -> str:
    """The first token shown at 10 in an explainer block."""
    match = re.search(r"^(.*)\t10$", target, re.M)
    return match[1].strip() if match else "nothing"


def answer(received) -> str:
    """The explainer (explanation, counterexample texts, revision) and the chat-logprobs
    simulator, told apart by their system messages."""
    messages = received.body["messages"]
    system, target = messages[0]["content"], messages[-1]["content"]
    if system == EXPLAINER_SYSTEM_MESSAGE:
        return f" the word {_top_word(target)}. It fires on it wherever it appears."
    if system == GENERATION_SYSTEM_MESSAGE:
        word = explained_word(target)
        activating = [f"ACTIVATING: The {word} was seen in town number {i}." for i in range(5)]
        near = [f"NON-ACTIVATING: The {word[::-1]} was seen in town number {i}." for i in range(5)]
        return "Here are the texts:\n" + "\n".join(activating + near)
    if system == REVISION_SYSTEM_MESSAGE:
        return f" the word {explained_word(target)}, most of all as a noun. Because it fires."
    assert system == CHAT_SYSTEM_MESSAGE, system
    return _simulate(received)


def _serve(pipe) -> None:
    with LLMServer(answer) as server:
        pipe.send(server.url)
        while pipe.recv() != "stop":  # "count" is the only question
            pipe.send(server.count())


class ScriptedServer(ServerProcess):
    """`benchmarks.llm.ServerProcess`, serving `answer` with no added latency."""

    def __init__(self) -> None:
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(child,), daemon=True
        )


# --- measurement 1: cost per revised neuron ------------------------------------------------------

STAGES = {
    EXPLAINER_SYSTEM_MESSAGE: "explanation",
    GENERATION_SYSTEM_MESSAGE: "generation",
    REVISION_SYSTEM_MESSAGE: "revision",
}


def per_neuron(calls: Iterable[CallResult], neurons: int) -> dict[str, float]:
    usage = Usage.of(calls)
    return {
        "calls": usage.calls / neurons,
        "http_calls": usage.http_calls / neurons,
        "prompt_tokens": usage.prompt_tokens / neurons,
        "completion_tokens": usage.completion_tokens / neurons,
        "total_tokens": (usage.prompt_tokens + usage.completion_tokens) / neurons,
    }


def ratios(numerator: dict[str, float], denominator: dict[str, float]) -> dict[str, float]:
    return {
        key: numerator[key] / denominator[key] if denominator[key] else math.nan
        for key in ("calls", "prompt_tokens", "completion_tokens", "total_tokens")
    }


class Pipeline:
    """The explainer and simulator profiles against one server, with clients over one cache."""

    def __init__(self, server: ScriptedServer, cache: Path) -> None:
        common = {"kind": "llm", "model": "bench", "base_url": server.url}
        self.explainer = explainer_profile("bench", common | {"n": 1, "neuron_sample": "all"})
        self.simulator = simulator_profile("bench", common | {"method": "chat_logprobs"})
        self.cache = cache

    def clients(self) -> tuple[LLMClient, LLMClient]:
        return (
            LLMClient(self.explainer.endpoint(), self.cache, sleep=no_sleep),
            LLMClient(self.simulator.endpoint(), self.cache, sleep=no_sleep),
        )

    def first_explanation(self, excerpts: pl.DataFrame):
        explainer_client, simulator_client = self.clients()
        with explainer_client, simulator_client:
            explanations, explain_calls = explain(self.explainer, excerpts, client=explainer_client)
            simulations, simulate_calls = simulate(
                self.simulator, explanations, excerpts, client=simulator_client
            )
        scores = score(simulations, calibrate=self.simulator.calibration)
        current = current_explanations(explanations, scores, self.simulator)
        return current, explain_calls, simulate_calls

    def revision_round(self, current: pl.DataFrame, excerpts: pl.DataFrame, subject):
        explainer_client, simulator_client = self.clients()
        clients = {"explainer_client": explainer_client, "simulator_client": simulator_client}
        with explainer_client, simulator_client:
            found, found_calls, _ = find_counterexamples(
                1,
                current,
                excerpts,
                self.explainer,
                self.simulator,
                subject,
                **clients,
            )
            revised, revise_calls = revise_round(
                1, current, found, excerpts, self.explainer, self.simulator, **clients
            )
        return found, revised, found_calls, revise_calls


def _stage(call: CallResult) -> str:
    return STAGES.get(call.request["messages"][0]["content"], "simulation")


def llm_costs(neurons: int) -> dict:
    excerpts = make_excerpts(neurons)
    result: dict[str, object] = {
        "neurons": neurons,
        "excerpt_tokens": LENGTH,
        "records_per_neuron": {"top": TOP_K, "random": RANDOM_K},
        "explainer_samples": 1,
        "simulator": "chat-logprobs, one call per excerpt",
        "server_latency_s": 0.0,
    }
    with tempfile.TemporaryDirectory() as folder, ScriptedServer() as server:
        folder = Path(folder)
        spec = tiny_spec(make_tiny_model(folder, "llama", num_layers=1), num_layers=1)
        subject = load_subject_model(spec, cache_dir=folder, downloads=folder, allow_hub=False)
        pipeline = Pipeline(server, folder / "cache")

        start = time.perf_counter()
        current, explain_calls, simulate_calls = pipeline.first_explanation(excerpts)
        first_s = time.perf_counter() - start
        start, before = time.perf_counter(), server.count()
        found, revised, found_calls, revise_calls = pipeline.revision_round(
            current, excerpts, subject
        )
        round_s, round_http = time.perf_counter() - start, server.count() - before
        start, before = time.perf_counter(), server.count()
        again = pipeline.revision_round(current, excerpts, subject)
        rerun_s, rerun_http = time.perf_counter() - start, server.count() - before

    explanation = per_neuron(explain_calls, neurons)
    scored = per_neuron([*explain_calls, *simulate_calls], neurons)
    revision = per_neuron([*found_calls, *revise_calls], neurons)
    stages = {
        "generation": [c for c in found_calls if _stage(c) == "generation"],
        "counterexample_simulation": [c for c in found_calls if _stage(c) == "simulation"],
        "revision": [c for c in revise_calls if _stage(c) == "revision"],
        "resimulation": [c for c in revise_calls if _stage(c) == "simulation"],
    }
    usable = found.filter(pl.col("error").is_null())
    result |= {
        "a_first_explanation": explanation,
        "b_first_explanation_scored": scored | {"wall_s": first_s},
        "c_revision_round": revision
        | {
            "by_stage": {name: per_neuron(calls, neurons) for name, calls in stages.items()},
            "http_calls_seen_by_server": round_http / neurons,
            "wall_s": round_s,
        },
        "c_over_a": ratios(revision, explanation),
        "c_over_b": ratios(revision, scored),
        "round": {
            "revised_neurons": revised["revised_explanation"].drop_nulls().len(),
            "kept": int(revised["kept"].sum()),
            "counterexamples_per_neuron": {
                source: usable.filter(pl.col("source") == source).height / neurons
                for source in ("generated", "mined")
            },
            "errors": revised["error"].drop_nulls().to_list()[:3],
        },
        "cached_rerun": {
            "http_calls": rerun_http,  # goal: 0
            "calls": len(again[2]) + len(again[3]),
            "cached_calls": Usage.of([*again[2], *again[3]]).cached,
            "same_counterexamples": again[0].equals(found),
            "same_revisions": again[1].equals(revised),
            "wall_over_first_round_ratio": rerun_s / round_s,
        },
    }
    return result


# --- measurement 2: offline rounds on real data --------------------------------------------------


def _layers(present: Sequence[int], wanted: Sequence[int] = OFFLINE_LAYERS) -> list[int]:
    """The wanted layers that are present, topped up with the first, middle and last present."""
    chosen = [layer for layer in wanted if layer in present]
    for layer in (present[0], present[len(present) // 2], present[-1]):
        if len(chosen) >= len(wanted):
            break
        if layer not in chosen:
            chosen.append(layer)
    return sorted(chosen)


def _overall_improved(root: str, last: int, layers: Sequence[int]) -> dict[tuple, float] | None:
    """Per (layer, profiles): the share of neurons whose test score after the last round is
    above the one before round 1, from the per-round tables when they are there."""
    first, final = f"{root}/revised_explanations_r1", f"{root}/revised_explanations_r{last}"
    if table_version(first) is None or table_version(final) is None:
        return None
    keys = ["layer", "neuron", "explainer", "explainer_hash", "simulator", "simulator_hash"]
    group = ["layer", "explainer", "simulator"]
    before = read_table(str(first), partition_column="layer", partitions=list(layers)).select(
        *keys, before=pl.col("previous_reported_score").fill_nan(None)
    )
    after = read_table(str(final), partition_column="layer", partitions=list(layers)).select(
        *keys, after=pl.col("reported_score").fill_nan(None)
    )
    both = before.join(after, on=keys).drop_nulls(["before", "after"])
    shares = both.group_by(group).agg(improved=(pl.col("after") > pl.col("before")).mean())
    return {tuple(row[:3]): row[3] for row in shares.select(*group, "improved").iter_rows()}


def offline_rounds(root: str) -> dict:
    table = f"{root}/revision_summary"
    if table_version(table) is None:
        return {
            "available": False,
            "reason": f"no revision_summary table at {table}: run `make demo` first (it takes "
            "minutes), then rerun this benchmark",
        }
    summary = read_table(str(table))
    present = sorted(summary["layer"].unique().to_list())
    layers = _layers(present)
    last = int(summary["round"].max())
    overall = _overall_improved(root, last, layers)
    out = []
    group = ["layer", "explainer", "explainer_hash", "simulator", "simulator_hash"]
    chosen = summary.filter(pl.col("layer").is_in(layers)).sort(*group, "round")
    for key, part in chosen.group_by(group, maintain_order=True):
        layer, explainer, _, simulator, _ = key
        rows = part.sort("round").to_dicts()
        means = {0: rows[0]["mean_previous_score"]} | {r["round"]: r["mean_score"] for r in rows}
        entry = {
            "layer": layer,
            "explainer": explainer,
            "simulator": simulator,
            "neurons": rows[0]["neurons"],
            "mean_test_score_by_round": means,
            "improved_by_round": {r["round"]: r["improved"] for r in rows},
            "kept_by_round": {r["round"]: r["kept"] for r in rows},
            "mean_change_by_round": {
                r["round"]: [r["mean_change"], r["change_low"], r["change_high"]] for r in rows
            },
        }
        if overall is not None:
            entry["improved_over_all_rounds"] = overall.get((layer, explainer, simulator))
        out.append(entry)
    return {"available": True, "table": str(table), "rounds": last, "layers": out}


def main(neurons: int = 24) -> dict:
    settings = load_settings()
    root = settings.model_root(settings.model())
    result = {"llm_path": llm_costs(neurons), "offline_rounds": offline_rounds(root)}
    save("revisions", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=str))
