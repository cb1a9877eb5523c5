"""The simulate stage: explanations + scoring excerpts -> the `simulations` table.

Every explanation row without an error is simulated on its neuron's calibration, valid and test
excerpts, top and random (never the train ones the explainer saw): one row per (explanation,
excerpt) with the true activations and the simulator's expected activations on the 0–10 scale.

- lexical baseline: offline, computed here;
- chat-logprobs: one chat call per excerpt, expected values from the number tokens' top logprobs;
  a reply that carries no logprobs at all is read as plain text (its numbers as written);
- all-at-once: one completion call per excerpt with `echo=True`, read from the prompt logprobs;
- plain-text: one chat call per excerpt, the numbers as written.

A failed call, an unreadable reply, or a reply that answers none of the excerpt's tokens becomes a
row with `error` set and no expected activations; the rest completes.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from autointerp.activations.splits import SCORING_SPLITS
from autointerp.config.profiles import SimulatorProfile
from autointerp.errors import AutointerpError, InputError
from autointerp.explain.prompt_format import ResponseParseError
from autointerp.llm.client import LLMClient
from autointerp.llm.requests import CallResult, LLMRequest
from autointerp.llm.responses import CompletionLogprobs
from autointerp.progress import Progress
from autointerp.simulate.baseline import simulate_lexical
from autointerp.simulate.parsers import (
    SimulationResult,
    parse_all_at_once,
    parse_chat_logprobs,
    parse_plain_text,
)
from autointerp.simulate.simulator_prompt import (
    ALL_AT_ONCE,
    CHAT_LOGPROBS,
    SimulationRequest,
    build_all_at_once_request,
    build_chat_request,
)
from autointerp.storage.schemas import SIMULATIONS_SCHEMA

_EXPLANATION_KEYS = ("layer", "neuron", "explainer", "explainer_hash", "sample")


def scoring_pairs(explanations: pl.DataFrame, excerpts: pl.DataFrame) -> pl.DataFrame:
    """One row per (usable explanation, scoring excerpt of its neuron), in a stable order."""
    usable = explanations.filter(
        pl.col("error").is_null() & pl.col("explanation").is_not_null()
    ).select(*_EXPLANATION_KEYS, "explanation")
    scoring = excerpts.filter(pl.col("split").is_in(SCORING_SPLITS)).select(
        "layer", "neuron", "excerpt_id", "split", "kind", "rank", "tokens", "activations"
    )
    return usable.join(scoring, on=["layer", "neuron"], how="inner").sort(
        *_EXPLANATION_KEYS, "split", "kind", "rank"
    )


def _frame(
    pairs: pl.DataFrame,
    profile: SimulatorProfile,
    expected: Sequence[Sequence[float] | None],
    call_ids: Sequence[Sequence[str]],
    errors: Sequence[str | None],
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            **{key: pairs[key] for key in _EXPLANATION_KEYS},
            "simulator": [profile.name] * pairs.height,
            "simulator_hash": [profile.hash] * pairs.height,
            "excerpt_id": pairs["excerpt_id"],
            "split": pairs["split"],
            "kind": pairs["kind"],
            "true_activations": pairs["activations"],
            "expected_activations": pl.Series(expected, dtype=pl.List(pl.Float32)),
            "call_ids": pl.Series(call_ids, dtype=pl.List(pl.Utf8)),
            "error": pl.Series(errors, dtype=pl.Utf8),
        },
        schema=SIMULATIONS_SCHEMA,
    )


def simulate(
    profile: SimulatorProfile,
    explanations: pl.DataFrame,
    excerpts: pl.DataFrame,
    *,
    client: LLMClient | None,
    progress: Progress | None = None,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """Simulate every usable explanation on its neuron's scoring excerpts (a neuron_excerpts
    frame). Returns the `simulations` table (SIMULATIONS_SCHEMA) and the LLM calls made (empty
    for the baseline)."""
    pairs = scoring_pairs(explanations, excerpts)
    explanation_texts = pairs["explanation"].to_list()
    tokens = pairs["tokens"].to_list()
    total = pairs.height

    if profile.kind == "baseline":
        weights = profile.lexical_weights()
        expected = []
        for i, (explanation, excerpt) in enumerate(zip(explanation_texts, tokens, strict=True)):
            expected.append(simulate_lexical(explanation, excerpt, weights))
            if progress is not None and (i + 1) % 1000 == 0:
                progress(i + 1, total)
        if progress is not None:
            progress(total, total)
        return _frame(pairs, profile, expected, [[]] * total, [None] * total), []

    if client is None:
        raise InputError(f"simulator {profile.name!r} calls an LLM: it needs a client")
    client.check_serves(profile.model, profile.base_url)
    requests = [
        _request(profile.method, explanation, excerpt, profile.few_shot)
        for explanation, excerpt in zip(explanation_texts, tokens, strict=True)
    ]
    done = 0

    def tick(_: int, __: CallResult) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    results = client.run_all([_llm_request(r) for r in requests], on_result=tick)
    expected_or_none: list[list[float] | None] = []
    errors: list[str | None] = []
    for request, result in zip(requests, results, strict=True):
        if not result.ok:
            expected_or_none.append(None)
            errors.append(result.error)
            continue
        try:
            simulation = _parse(request, result)
        except AutointerpError as err:
            expected_or_none.append(None)
            errors.append(str(err))
        else:
            expected_or_none.append(simulation.expected_activations)
            errors.append(None)
    call_ids = [[r.call_id] for r in results]
    return _frame(pairs, profile, expected_or_none, call_ids, errors), results


def _request(
    method: str, explanation: str, tokens: Sequence[str], few_shot: str
) -> SimulationRequest:
    if method == ALL_AT_ONCE:
        return build_all_at_once_request(explanation, tokens, few_shot=few_shot)
    return build_chat_request(
        explanation, tokens, few_shot=few_shot, logprobs=method == CHAT_LOGPROBS
    )


def _llm_request(request: SimulationRequest) -> LLMRequest:
    if request.method == ALL_AT_ONCE:
        return LLMRequest.completion(request.prompt, **request.params)
    return LLMRequest.chat(request.messages, **request.params)


def _parse(request: SimulationRequest, result: CallResult) -> SimulationResult:
    """Expected activations from a successful call; ResponseParseError when unusable."""
    logprobs = result.logprobs[0] if result.logprobs else None
    text = result.text or ""
    if request.method == ALL_AT_ONCE:
        if not isinstance(logprobs, CompletionLogprobs):
            raise ResponseParseError(
                "the completion carried no prompt logprobs: the endpoint does not support "
                "echo=True with logprobs (use a chat-logprobs or plain-text simulator)"
            )
        simulation = parse_all_at_once(request, logprobs)
    elif request.method == CHAT_LOGPROBS and isinstance(logprobs, list):
        simulation = parse_chat_logprobs(request, logprobs)
    else:
        simulation = parse_plain_text(request.tokens, text)
    if len(simulation.missing) == len(request.tokens):
        raise ResponseParseError(
            f"the simulator's reply answered none of the {len(request.tokens)} tokens: "
            f"{text[:200]!r}"
        )
    return simulation
