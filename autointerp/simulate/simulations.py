"""The simulate stage: explanations + scoring excerpts -> the `simulations` table.

Every explanation row without an error is simulated on its neuron's calibration, valid and test
excerpts, top and random (never the train ones the explainer saw): one row per (explanation,
excerpt) with the true activations and the simulator's expected activations on the 0–10 scale.

- lexical baseline: offline, computed here;
- chat-logprobs: one chat call per excerpt, expected values from the number tokens' top logprobs;
  a reply that carries no logprobs at all is read as plain text, and its row's `method` says so;
- all-at-once: one completion call per excerpt with `echo=True`, read from the prompt logprobs;
- plain-text: one chat call per excerpt, the numbers as written.

Each row records the method that read it, the positions the simulator did not answer
(`missing_positions`, null in `expected_activations` and left out of scoring), the positions read
from the written number rather than logprobs (`sampled_positions`), the all-at-once positions set
to 0 by the reference's fold rule (`folded_positions`), and whether the reply was cut off by
max_tokens (`truncated`). A failed call, an unreadable reply, or one that leaves more than the
profile's `max_missing_share` of the tokens unanswered becomes a row with `error` set and no
expected activations; the rest completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import polars as pl

from autointerp.activations.splits import SCORING_SPLITS
from autointerp.config.profiles import IMPORTED, SimulatorProfile
from autointerp.errors import AutointerpError, InputError
from autointerp.explain.prompt_format import ResponseParseError
from autointerp.llm.client import LLMClient
from autointerp.llm.probe import Need, probe
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
    PLAIN_TEXT,
    SimulationRequest,
    build_all_at_once_request,
    build_chat_request,
)
from autointerp.storage.schemas import SIMULATIONS_SCHEMA

_EXPLANATION_KEYS = ("layer", "neuron", "explainer", "explainer_hash", "sample")
# What each method needs of the server, checked by one probe call before the stage's calls.
_NEEDS: dict[str, Need] = {ALL_AT_ONCE: "prompt_logprobs", CHAT_LOGPROBS: "chat_logprobs"}


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


@dataclass(frozen=True)
class Outcome:
    """What one simulation of one excerpt gave: the expected activations (None at positions not
    answered, all None for an error row), the method that produced them, and where they are not
    what the method promises."""

    expected: list[float | None] | None
    method: str
    missing: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)
    truncated: bool = False  # the reply was cut off by max_tokens
    error: str | None = None


def _frame(
    pairs: pl.DataFrame,
    profile: SimulatorProfile,
    outcomes: Sequence[Outcome],
    call_ids: Sequence[Sequence[str]],
) -> pl.DataFrame:
    positions = pl.List(pl.Int32)
    return pl.DataFrame(
        {
            **{key: pairs[key] for key in _EXPLANATION_KEYS},
            "simulator": [profile.name] * pairs.height,
            "simulator_hash": [profile.hash] * pairs.height,
            "excerpt_id": pairs["excerpt_id"],
            "split": pairs["split"],
            "kind": pairs["kind"],
            "true_activations": pairs["activations"],
            "expected_activations": pl.Series(
                [o.expected for o in outcomes], dtype=pl.List(pl.Float32)
            ),
            "method": pl.Series([o.method for o in outcomes], dtype=pl.Utf8),
            "missing_positions": pl.Series([o.missing for o in outcomes], dtype=positions),
            "sampled_positions": pl.Series([o.sampled for o in outcomes], dtype=positions),
            "folded_positions": pl.Series([o.folded for o in outcomes], dtype=positions),
            "truncated": pl.Series([o.truncated for o in outcomes], dtype=pl.Boolean),
            "call_ids": pl.Series(call_ids, dtype=pl.List(pl.Utf8)),
            "error": pl.Series([o.error for o in outcomes], dtype=pl.Utf8),
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
    if profile.kind == IMPORTED:
        raise InputError(
            f"simulator {profile.name!r} is imported: it simulates nothing, its simulations are "
            "its dataset's (autointerp.interchange.imported)"
        )
    pairs = scoring_pairs(explanations, excerpts)
    explanation_texts = pairs["explanation"].to_list()
    tokens = pairs["tokens"].to_list()
    total = pairs.height

    if profile.kind == "baseline":
        weights = profile.lexical_weights()
        outcomes = []
        for i, (explanation, excerpt) in enumerate(zip(explanation_texts, tokens, strict=True)):
            predicted = simulate_lexical(explanation, excerpt, weights)
            outcomes.append(Outcome(expected=list(predicted), method=profile.method))
            if progress is not None and (i + 1) % 1000 == 0:
                progress(i + 1, total)
        if progress is not None:
            progress(total, total)
        return _frame(pairs, profile, outcomes, [[]] * total), []

    if client is None:
        raise InputError(f"simulator {profile.name!r} calls an LLM: it needs a client")
    client.check_serves(profile.model, profile.base_url)
    requests = [
        simulation_request(profile.method, explanation, excerpt, profile.few_shot)
        for explanation, excerpt in zip(explanation_texts, tokens, strict=True)
    ]
    outcomes: list[Outcome | None] = [None] * total
    done = 0

    def read(index: int, result: CallResult) -> None:
        """Each reply is read as it arrives; its logprobs are then let go (see run_all)."""
        nonlocal done
        outcomes[index] = _outcome(requests[index], result, profile.max_missing_share)
        done += 1
        if progress is not None:
            progress(done, total)

    llm_requests = [_llm_request(r) for r in requests]
    if progress is not None:
        progress(0, total)  # starts the clock: a stage waiting on its first call reports so
    probe(client, llm_requests, needs=_NEEDS.get(profile.method))
    results = client.run_all(
        llm_requests,
        on_result=read,
        keep_logprobs=False,
        label=f"simulations by {profile.name}",
    )
    return _frame(pairs, profile, outcomes, [[r.call_id] for r in results]), results


def _outcome(request: SimulationRequest, result: CallResult, max_missing: float) -> Outcome:
    """A call's result read as an Outcome: an error row when the call failed, the reply cannot
    be read, or more than `max_missing` of the tokens went unanswered."""
    if not result.ok:
        return Outcome(expected=None, method=request.method, error=result.error)
    # An all-at-once reply stops at its one generated token by design: never "cut off".
    truncated = request.method != ALL_AT_ONCE and "length" in result.finish_reasons
    try:
        method, simulation = _parse(request, result)
    except AutointerpError as err:
        suffix = " (the reply was cut off by max_tokens)" if truncated else ""
        return Outcome(
            expected=None, method=request.method, truncated=truncated, error=f"{err}{suffix}"
        )
    n = len(request.tokens)
    answered = n - len(simulation.missing)
    outcome = Outcome(
        expected=simulation.expected_activations,
        method=method,
        missing=simulation.missing,
        sampled=simulation.sampled,
        folded=simulation.folded,
        truncated=truncated,
    )
    if len(simulation.missing) > max_missing * n:
        cut = ", cut off by max_tokens" if truncated else ""
        return replace(
            outcome,
            expected=None,
            error=f"the simulator answered {answered} of {n} tokens{cut} "
            f"(more than max_missing_share = {max_missing:.0%} unanswered)",
        )
    return outcome


def simulation_request(
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


def _parse(request: SimulationRequest, result: CallResult) -> tuple[str, SimulationResult]:
    """(the method that read the reply, its expected activations) from a successful call;
    ResponseParseError when unusable. A chat reply that carries no logprobs is read as plain
    text, and says so: its values are the numbers as written, not expectations."""
    logprobs = result.logprobs[0] if result.logprobs else None
    text = result.text or ""
    if request.method == ALL_AT_ONCE:
        if not isinstance(logprobs, CompletionLogprobs):
            raise ResponseParseError(
                "the completion carried no prompt logprobs: the endpoint does not support "
                "echo=True with logprobs (use a chat-logprobs or plain-text simulator)"
            )
        method, simulation = ALL_AT_ONCE, parse_all_at_once(request, logprobs)
    elif request.method == CHAT_LOGPROBS and isinstance(logprobs, list):
        method, simulation = CHAT_LOGPROBS, parse_chat_logprobs(request, logprobs)
    else:
        method, simulation = PLAIN_TEXT, parse_plain_text(request.tokens, text)
    if len(simulation.missing) == len(request.tokens):
        raise ResponseParseError(
            f"the simulator's reply answered none of the {len(request.tokens)} tokens: "
            f"{text[:200]!r}"
        )
    return method, simulation
