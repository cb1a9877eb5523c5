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

from autointerp.baselines import simulate_lexical
from autointerp.errors import AutointerpError, InputError
from autointerp.explanations import Progress, check_client
from autointerp.llm.client import CallResult, LLMClient, LLMRequest
from autointerp.llm.responses import CompletionLogprobs
from autointerp.llm.responses import TokenLogprob as ChatTokenLogprob
from autointerp.profiles import SimulatorProfile
from autointerp.prompts import ResponseParseError
from autointerp.simulate import (
    ALL_AT_ONCE,
    CHAT_LOGPROBS,
    SimulationRequest,
    SimulationResult,
    TokenLogprob,
    build_all_at_once_request,
    build_chat_request,
    parse_all_at_once,
    parse_chat_logprobs,
    parse_plain_text,
)
from autointerp.splits import SCORING_SPLITS

SIMULATIONS_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,
    "explainer_hash": pl.Utf8,
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "sample": pl.Int32,
    "excerpt_id": pl.Int64,
    "split": pl.Utf8,  # calibration | valid | test
    "kind": pl.Utf8,  # top | random
    "true_activations": pl.List(pl.Float32),
    "expected_activations": pl.List(pl.Float32),  # 0–10 scale; null when the row is an error
    "call_ids": pl.List(pl.Utf8),
    "error": pl.Utf8,
}
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
        expected = []
        for i, (explanation, excerpt) in enumerate(zip(explanation_texts, tokens, strict=True)):
            expected.append(simulate_lexical(explanation, excerpt))
            if progress is not None and (i + 1) % 1000 == 0:
                progress(i + 1, total)
        if progress is not None:
            progress(total, total)
        return _frame(pairs, profile, expected, [[]] * total, [None] * total), []

    if client is None:
        raise InputError(f"simulator {profile.name!r} calls an LLM: it needs a client")
    check_client(client, profile.model, profile.base_url)
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
        simulation = parse_all_at_once(request, _echo_logprobs(logprobs))
    elif request.method == CHAT_LOGPROBS and isinstance(logprobs, list):
        simulation = parse_chat_logprobs(request, _chat_positions(logprobs))
    else:
        simulation = parse_plain_text(request.tokens, text)
    if len(simulation.missing) == len(request.tokens):
        raise ResponseParseError(
            f"the simulator's reply answered none of the {len(request.tokens)} tokens: "
            f"{text[:200]!r}"
        )
    return simulation


def _chat_positions(logprobs: list[ChatTokenLogprob]) -> list[TokenLogprob]:
    """The client's chat logprobs as the parser's positions; alternatives whose logprob the
    server left out carry no probability and are dropped."""
    return [
        TokenLogprob(
            token=position.token,
            logprob=position.logprob,
            top_logprobs=tuple((t, lp) for t, lp in position.top_logprobs if lp is not None),
        )
        for position in logprobs
    ]


def _echo_logprobs(logprobs: CompletionLogprobs) -> dict[str, object]:
    """The client's completion logprobs as the parser's `logprobs` mapping; text offsets only
    when the server gave every one (otherwise the parser rebuilds them from token lengths)."""
    offsets = logprobs.text_offset
    return {
        "tokens": logprobs.tokens,
        "token_logprobs": logprobs.token_logprobs,
        "top_logprobs": [
            None if top is None else {t: lp for t, lp in top.items() if lp is not None}
            for top in logprobs.top_logprobs
        ],
        "text_offset": None if any(o is None for o in offsets) else offsets,
    }
