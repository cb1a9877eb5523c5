"""The reference method against a real llama-cpp-python server on loopback (opt-in, like the
tests marked llama_server: `make bench-llama`, or `python -m benchmarks llama_server` with the
server installed and AUTOINTERP_TEST_GGUF naming a GGUF).

SmolLM2-135M is the subject (the first NEURONS neurons of layer 0, captured over the first 100
excerpts of the default corpus) and, as its Q4_1 GGUF served by llama-cpp-python with
`--logits_all True` (one request at a time, as its profiles are set), the explainer and the
simulator, through the shipped `local-llama-cpp` and `local-all-at-once` profiles and a
chat-logprobs profile like them. Per neuron: calls (the probe call included), HTTP calls,
prompt and completion tokens and wall time of the explanation (once), then for each method over
a response cache of its own, of the simulation and of one revision round (counterexample texts,
their simulation and the mined ones', the revision and its re-simulation); the share of target
positions each method left unanswered in the simulate stage (error rows count whole); the
ratio of the methods' wall times; and the load average beside each wall time (a shared
machine).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import polars as pl

from autointerp.activations.capture import capture_records
from autointerp.activations.excerpts import excerpts_of_records
from autointerp.activations.subject_model import SubjectModel
from autointerp.config.profiles import ExplainerProfile, SimulatorProfile, simulator_profile
from autointerp.config.settings import RevisionSpec, Settings
from autointerp.explain.explanations import explain
from autointerp.llm.accounting import Usage
from autointerp.llm.client import LLMClient
from autointerp.llm.requests import CallResult
from autointerp.revise.counterexamples import find_counterexamples
from autointerp.revise.revisions import current_explanations, revise_round
from autointerp.score.scores import score
from autointerp.simulate.simulations import simulate
from autointerp.testing.llama_server import GGUF_ENV, configured_gguf, llama_server
from benchmarks.common import corpus, default_settings, save, subject

LAYER, NEURONS, EXCERPTS = 0, 1, 100
# Scored excerpts of each kind (top, random) per split, and the round's texts: a small slice,
# since a 135M model on two shared cores writes a chat reply in tens of seconds.
PER_KIND, N_TEXTS, MINE_K = 1, 1, 1
T = TypeVar("T")


def _report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def timed(work: Callable[[], T]) -> tuple[T, dict]:
    """`work()`, its wall time and the 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    out = work()
    spent = time.perf_counter() - start
    return out, {"wall_s": spent, "load_before": before, "load_after": os.getloadavg()[0]}


def per_neuron(calls: list[CallResult], timing: dict, neurons: int) -> dict:
    """Per neuron: calls, HTTP calls and tokens (every call counted once: with fresh caches the
    stage's reply to its probe's request is a cache hit of what the probe paid for), wall time."""
    usage = Usage.of(calls)
    return {
        "calls": usage.calls / neurons,
        "http_calls": usage.http_calls / neurons,
        "errors": usage.errors / neurons,
        "prompt_tokens": sum(c.prompt_tokens or 0 for c in calls) / neurons,
        "completion_tokens": sum(c.completion_tokens or 0 for c in calls) / neurons,
        "wall_s": timing["wall_s"] / neurons,
        "load_average": [round(timing["load_before"], 2), round(timing["load_after"], 2)],
    }


def unanswered(simulations: pl.DataFrame) -> dict:
    """The share of target positions without a prediction: unanswered ones of read rows, and
    every position of an error row."""
    positions = simulations["true_activations"].list.len()
    failed = simulations["error"].is_not_null()
    missing = simulations["missing_positions"].list.len().filter(~failed).sum()
    errors = simulations.filter(failed)["error"].str.slice(0, 160).value_counts(sort=True)
    return {
        "share": (missing + positions.filter(failed).sum()) / positions.sum(),
        "in_read_rows": missing / positions.sum(),
        "error_rows": int(failed.sum()),
        "rows": simulations.height,
        "error_examples": errors.head(3).rows(),
    }


def layer_excerpts(neurons: int) -> tuple[pl.DataFrame, SubjectModel, Settings]:
    """The first `neurons` neurons of layer 0 as a neuron_excerpts frame, the subject and the
    settings."""
    settings = default_settings()
    model = subject(settings)
    frame = corpus(settings, model, EXCERPTS)
    records = capture_records(model, frame, [LAYER], settings.records)
    records = records.filter(pl.col("neuron") < neurons)
    excerpts = excerpts_of_records(records, frame).filter(
        (pl.col("split") == "train")
        | (pl.int_range(pl.len()).over("neuron", "split", "kind") < PER_KIND)
    )
    return excerpts, model, settings


def method_run(
    explainer: ExplainerProfile,
    simulator: SimulatorProfile,
    explanations: pl.DataFrame,
    excerpts: pl.DataFrame,
    model: SubjectModel,
    spec: RevisionSpec,
    cache: Path,
    neurons: int,
) -> dict:
    """Simulate the explanations with `simulator`, then one revision round, over `cache`."""
    explainer_client = LLMClient(explainer.endpoint(), cache, report=_report, report_every_s=30)
    simulator_client = LLMClient(simulator.endpoint(), cache, report=_report, report_every_s=30)
    clients = {"explainer_client": explainer_client, "simulator_client": simulator_client}
    with explainer_client, simulator_client:
        (simulations, simulate_calls), simulate_time = timed(
            lambda: simulate(simulator, explanations, excerpts, client=simulator_client)
        )
        current = current_explanations(
            explanations, score(simulations, calibrate=simulator.calibration), simulator
        )

        def round_one():
            found, found_calls, _ = find_counterexamples(
                1, current, excerpts, explainer, simulator, model, spec=spec, **clients
            )
            revised, revise_calls = revise_round(
                1, current, found, excerpts, explainer, simulator, spec=spec, **clients
            )
            return found, revised, found_calls + revise_calls

        (found, revised, round_calls), round_time = timed(round_one)
    return {
        "simulate": per_neuron(simulate_calls, simulate_time, neurons),
        "unanswered_positions": unanswered(simulations),
        "revision_round": per_neuron(round_calls, round_time, neurons)
        | {
            "counterexamples": found.filter(pl.col("error").is_null()).height,
            "revised": revised["revised_explanation"].drop_nulls().len(),
            "kept": int(revised["kept"].sum()),
        },
    }


def main(neurons: int = NEURONS) -> dict:
    gguf = configured_gguf()
    if gguf is None:
        raise SystemExit(f"set {GGUF_ENV} to a GGUF file (`make bench-llama` does)")
    excerpts, model, settings = layer_excerpts(neurons)
    shipped = settings.profiles
    result: dict = {
        "subject": f"{settings.model().name}, layer {LAYER}, first {neurons} neurons, "
        f"{EXCERPTS} excerpts",
        "scored_excerpts_per_neuron": excerpts.filter(pl.col("split") != "train").height / neurons,
        "round": {"n_texts": N_TEXTS, "mine_k": MINE_K},
        "server": f"llama-cpp-python {gguf.name} --logits_all True --n_ctx 4096",
        "cpus": os.cpu_count(),
    }
    with (
        tempfile.TemporaryDirectory() as folder,
        llama_server(gguf, "--logits_all", "True", log=Path(folder) / "server.log") as url,
    ):
        local = {"base_url": url}
        explainer = replace(shipped.explainers["local-llama-cpp"], **local)
        # Chat logprobs first: all-at-once replies take minutes each on this server, and
        # what is measured is saved after each method, so a stopped run keeps the rest.
        methods = {
            "chat_logprobs": simulator_profile(
                "local-chat-logprobs",
                {"kind": "llm", "method": "chat_logprobs", "model": "local", "max_concurrency": 1}
                | {"timeout_s": 300.0, "calibration": True}
                | local,
            ),
            "all_at_once": replace(shipped.simulators["local-all-at-once"], **local),
        }
        client = LLMClient(explainer.endpoint(), Path(folder) / "explain", report=_report)
        with client:
            (explanations, calls), timing = timed(
                lambda: explain(explainer, excerpts, client=client)
            )
        result["explain"] = per_neuron(calls, timing, neurons) | {
            "explanations": explanations["explanation"].to_list()
        }
        save("llama_server", result)
        for method, simulator in methods.items():
            _report(f"== {method}")
            result[method] = method_run(
                explainer,
                simulator,
                explanations,
                excerpts,
                model,
                replace(settings.revisions, n_texts=N_TEXTS, mine_k=MINE_K),
                Path(folder) / method,
                neurons,
            )
            save("llama_server", result)
    result["wall_ratio_chat_over_all_at_once"] = {
        stage: result["chat_logprobs"][stage]["wall_s"] / result["all_at_once"][stage]["wall_s"]
        for stage in ("simulate", "revision_round")
    }
    save("llama_server", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, default=str))
