"""The explainer's prompt (REFERENCE.md "Explainer prompt"), as plain data for any LLM client.

A prompt is a system message, then worked few-shot neurons, then the target neuron. In chat form
the few-shot neurons are user/assistant turns and the target is the last user turn; in completion
form the same texts are concatenated, so both forms come from the same building blocks. The static
part (system message and few-shot neurons) comes first and is byte-identical for every neuron, so
providers' automatic prompt caching applies to it. The record format is `prompt_format`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from autointerp.activations.data_model import ActivationRecord
from autointerp.errors import InputError
from autointerp.explain.few_shot import FewShot, few_shot_hash, resolve_few_shot
from autointerp.explain.prompt_format import (
    ACTIVATION_FORMAT,
    STUDY_INTRO,
    estimate_tokens,
    explainer_block,
    explanation_header,
    few_shot_answer,
    messages_hash,
)

EXPLAINER_PROMPT_VERSION = "reference-v1"
TOKEN_LIST_PROMPT_VERSION = "token-list-v1"

# The reference's sampling defaults for the explainer; an explainer profile may override them.
REFERENCE_EXPLAINER_PARAMS: dict[str, object] = {
    "n": 5,
    "max_tokens": 60,
    "temperature": 1.0,
    "top_p": 1.0,
}

EXPLAINER_SYSTEM_MESSAGE = (
    f"{STUDY_INTRO} Each excerpt below is written one token per line in the format "
    f"{ACTIVATION_FORMAT} From the tokens with nonzero activations, explain in one short phrase "
    "what the neuron responds to. Describe the pattern rather than listing every token."
)

TOKEN_LIST_SYSTEM_MESSAGE = (
    f"{STUDY_INTRO} For each neuron below you see a list of tokens on which its mean activation "
    "is among the highest, written as quoted strings. Explain in one short phrase what the "
    "neuron responds to. Describe the pattern rather than repeating the list."
)


@dataclass(frozen=True)
class ExplanationRequest:
    """An explainer prompt ready to send, and what was left out to fit the budget."""

    messages: list[dict[str, str]]
    prompt_version: str
    few_shot_hash: str
    prompt_tokens: int  # as counted by the count_tokens given when building
    dropped_few_shot_records: int = 0
    dropped_target_records: int = 0
    params: dict[str, object] = field(default_factory=lambda: dict(REFERENCE_EXPLAINER_PARAMS))

    @property
    def prompt(self) -> str:
        """The completion-endpoint form: the same texts, concatenated in order."""
        return "".join(m["content"] for m in self.messages)

    @property
    def prompt_hash(self) -> str:
        return messages_hash(self.messages)


def _messages(
    system: str, examples: Sequence[tuple[str, str]], target: str
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    for block, answer in examples:
        messages += [
            {"role": "user", "content": block},
            {"role": "assistant", "content": answer},
        ]
    return [*messages, {"role": "user", "content": target}]


def _drop_one_few_shot_record(kept: list[tuple[str, list[ActivationRecord]]]) -> None:
    """Drop the last record of the example with the most records (the later one on ties), so
    examples shrink evenly; an example left without records disappears."""
    largest = max(range(len(kept)), key=lambda i: (len(kept[i][1]), i))
    kept[largest][1].pop()
    if not kept[largest][1]:
        del kept[largest]


def build_explanation_request(
    records: Sequence[ActivationRecord],
    *,
    few_shot: FewShot = "default",
    max_prompt_tokens: int | None = None,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> ExplanationRequest:
    """The explainer prompt for a neuron's explanation records (its train top records).

    When the prompt counts more than `max_prompt_tokens`, few-shot records are dropped one at a
    time, then the target's last (weakest, as records come ranked) records, down to one; if a
    single record still does not fit, InputError.
    """
    if not records:
        raise InputError("the explainer needs at least one activation record")
    examples = resolve_few_shot(few_shot)
    kept = [(n.explanation, list(n.records)) for n in examples]
    target = list(records)
    dropped_few_shot = dropped_target = 0
    while True:
        turns = [
            (explainer_block(i + 1, recs), few_shot_answer(explanation))
            for i, (explanation, recs) in enumerate(kept)
        ]
        messages = _messages(
            EXPLAINER_SYSTEM_MESSAGE, turns, explainer_block(len(kept) + 1, target)
        )
        tokens = count_tokens("".join(m["content"] for m in messages))
        if max_prompt_tokens is None or tokens <= max_prompt_tokens:
            return ExplanationRequest(
                messages=messages,
                prompt_version=EXPLAINER_PROMPT_VERSION,
                few_shot_hash=few_shot_hash(examples),
                prompt_tokens=tokens,
                dropped_few_shot_records=dropped_few_shot,
                dropped_target_records=dropped_target,
            )
        if kept:
            _drop_one_few_shot_record(kept)
            dropped_few_shot += 1
        elif len(target) > 1:
            target.pop()
            dropped_target += 1
        else:
            raise InputError(
                f"the explainer prompt needs {tokens} tokens with no few-shot example and one "
                f"record, more than max_prompt_tokens={max_prompt_tokens}"
            )


TOKEN_LIST_TOP = 100  # the reference shows 50 of a neuron's top 100 tokens by mean activation
TOKEN_LIST_SHOWN = 50


def shown_tokens(ranked: Sequence[str], *, seed: int = 0) -> list[str]:
    """TOKEN_LIST_SHOWN of the first TOKEN_LIST_TOP token strings of `ranked` (highest mean
    activation first), chosen at random (seeded, so deterministic) and listed in rank order."""
    top = list(ranked[:TOKEN_LIST_TOP])
    if len(top) <= TOKEN_LIST_SHOWN:
        return top
    picks = np.random.default_rng(seed).choice(len(top), size=TOKEN_LIST_SHOWN, replace=False)
    return [top[i] for i in sorted(picks)]


def tokens_by_mean(records: Sequence[ActivationRecord]) -> list[str]:
    """Token strings ranked by their mean activation over `records` (a few-shot neuron's, which
    come with no corpus statistics)."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for token, activation in zip(record.tokens, record.activations, strict=True):
            totals[token] = totals.get(token, 0.0) + float(activation)
            counts[token] = counts.get(token, 0) + 1
    return sorted(totals, key=lambda t: (-totals[t] / counts[t], t))


def token_list_block(index: int, tokens: Sequence[str]) -> str:
    """A neuron's block in the token-list variant: its top tokens as JSON strings."""
    listed = ", ".join(json.dumps(t, ensure_ascii=False) for t in tokens)
    return f"\n\nNeuron {index}\nTop tokens: {listed}" + explanation_header(index)


def build_token_list_explanation_request(
    ranked_tokens: Sequence[str],
    *,
    few_shot: FewShot = "default",
    seed: int = 0,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> ExplanationRequest:
    """The token-list explainer variant (REFERENCE.md): the neuron is shown as 50 of its top 100
    tokens by mean activation over the corpus (`ranked_tokens`, highest first: the neuron
    records' `top_mean_token_ids`), after few-shot neurons shown the same way."""
    if not ranked_tokens:
        raise InputError(
            "the token-list explainer needs the neuron's tokens ranked by mean activation over "
            "the corpus: set [records] top_mean_tokens = 100 and capture again"
        )
    examples = resolve_few_shot(few_shot)
    turns = [
        (
            token_list_block(i + 1, shown_tokens(tokens_by_mean(n.records), seed=seed)),
            few_shot_answer(n.explanation),
        )
        for i, n in enumerate(examples)
    ]
    target = token_list_block(len(examples) + 1, shown_tokens(ranked_tokens, seed=seed))
    messages = _messages(TOKEN_LIST_SYSTEM_MESSAGE, turns, target)
    return ExplanationRequest(
        messages=messages,
        prompt_version=TOKEN_LIST_PROMPT_VERSION,
        few_shot_hash=few_shot_hash(examples),
        prompt_tokens=count_tokens("".join(m["content"] for m in messages)),
    )
