"""The explainer's prompt (REFERENCE.md "Explainer prompt"), as plain data for any LLM client.

A prompt is a system message, then worked few-shot neurons, then the target neuron. In chat form
the few-shot neurons are user/assistant turns and the target is the last user turn; in completion
form the same texts are concatenated, so both forms come from the same building blocks. The static
part (system message and few-shot neurons) comes first and is byte-identical for every neuron, so
providers' automatic prompt caching applies to it.

One choice of this project: a token holding a newline, tab or carriage return is written escaped
(`\\n`, `\\t`, `\\r`), so that one token stays one `token<tab>value` line. The simulators rely on it
to read their answers back line by line.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from autointerp.data_model import ActivationRecord
from autointerp.errors import AutointerpError, InputError

EXPLAINER_PROMPT_VERSION = "reference-v1"
TOKEN_LIST_PROMPT_VERSION = "token-list-v1"

MAX_NORMALIZED_ACTIVATION = 10
# Below this share of nonzero displayed activations, the records are repeated without the zeros.
ZEROS_FILTER_THRESHOLD = 0.2
EXPLANATION_LEAD = "the main thing this neuron does is find"

# The reference's sampling defaults for the explainer; an explainer profile may override them.
REFERENCE_EXPLAINER_PARAMS: dict[str, object] = {
    "n": 5,
    "max_tokens": 60,
    "temperature": 1.0,
    "top_p": 1.0,
}

EXPLAINER_SYSTEM_MESSAGE = (
    "This is a study of the neurons of a neural network language model. A neuron responds to "
    "some particular feature of the text it reads. Each excerpt below is written one token per "
    "line in the format token<tab>activation, where the activation is a whole number from 0 to "
    "10: 0 means no response to that token, and larger values mean a stronger response. From "
    "the tokens with nonzero activations, explain in one short phrase what the neuron responds "
    "to. Describe the pattern rather than listing every token."
)

TOKEN_LIST_SYSTEM_MESSAGE = (
    "This is a study of the neurons of a neural network language model. A neuron responds to "
    "some particular feature of the text it reads. For each neuron below you see a list of "
    "tokens on which its mean activation is among the highest, written as quoted strings. "
    "Explain in one short phrase what the neuron responds to. Describe the pattern rather than "
    "repeating the list."
)


class ResponseParseError(AutointerpError):
    """An LLM response cannot be read as the answer the prompt asked for."""


@dataclass(frozen=True)
class FewShotNeuron:
    """A worked example: a neuron's records with raw activations, and its explanation."""

    records: tuple[ActivationRecord, ...]
    explanation: str


def _record(pairs: Sequence[tuple[str, float]]) -> ActivationRecord:
    return ActivationRecord(tokens=[t for t, _ in pairs], activations=[a for _, a in pairs])


# Three neurons written for this project: a syntactic one (closing brackets), a topical one (the
# sea) and a contextual one (the surname after a title). Activations are in raw units, as the
# subject model would give them, and are normalized like any target's.
# fmt: off
_DEFAULT_FEW_SHOT: tuple[FewShotNeuron, ...] = (
    FewShotNeuron(
        records=(
            _record([("The", 0), (" function", 0), (" returns", 0), (" a", 0), (" list", 0),
                     (" (", 0), ("or", 0), (" None", 0), (")", 3.1), (" when", 0), (" the", 0),
                     (" input", 0), (" is", 0), (" empty", 0), (".", 0.2)]),
            _record([("x", 0), (" =", 0), (" max", 0), ("(", 0.1), ("values", 0), ("[", 0),
                     ("i", 0), ("],", 2.6), (" key", 0), ("=", 0), ("abs", 0), (")", 3.4),
                     (" +", 0), (" 1", 0)]),
            _record([("See", 0), (" the", 0), (" appendix", 0), (" [", 0), ("3", 0), ("]", 2.9),
                     (" for", 0), (" details", 0), (" (", 0), ("page", 0), (" 12", 0.3),
                     (").", 3.2)]),
        ),
        explanation="closing parentheses and square brackets",
    ),
    FewShotNeuron(
        records=(
            _record([("The", 0), (" old", 0), (" sailor", 4.2), (" watched", 0), (" the", 0),
                     (" ship", 5.0), (" drift", 0.4), (" slowly", 0), (" out", 0), (" of", 0),
                     (" the", 0), (" harbor", 3.8), (".", 0)]),
            _record([("We", 0), (" spent", 0), (" the", 0), (" summer", 0), (" by", 0),
                     (" the", 0), (" ocean", 4.6), (",", 0), (" fishing", 1.9), (" from", 0),
                     (" a", 0), (" small", 0), (" boat", 4.1), (".", 0)]),
            _record([("Waves", 3.5), (" crashed", 0.6), (" against", 0), (" the", 0),
                     (" hull", 4.4), (" as", 0), (" the", 0), (" crew", 2.7), (" lowered", 0.3),
                     (" the", 0), (" sails", 4.8), (".", 0)]),
        ),
        explanation="words about the sea, ships and sailing",
    ),
    FewShotNeuron(
        records=(
            _record([("Yesterday", 0), (" Mr", 0), (".", 0.4), (" Hall", 6.1), ("ett", 1.2),
                     (" met", 0), (" with", 0), (" Mrs", 0), (".", 0.5), (" Patel", 6.8),
                     (" to", 0), (" discuss", 0), (" the", 0), (" budget", 0), (".", 0)]),
            _record([('"', 0), ("Thank", 0), (" you", 0), (",", 0), (" Dr", 0), (".", 0.3),
                     (" Owens", 5.9), (',"', 0.2), (" said", 0), (" the", 0), (" nurse", 0),
                     (".", 0)]),
            _record([("Letters", 0), (" addressed", 0), (" to", 0), (" Ms", 0.2),
                     (" Rivera", 6.3), (" arrived", 0), (" on", 0), (" Monday", 0), (".", 0)]),
        ),
        explanation="surnames that come right after a title such as Mr, Mrs, Ms or Dr",
    ),
)
# fmt: on

FEW_SHOT_SETS: dict[str, tuple[FewShotNeuron, ...]] = {"default": _DEFAULT_FEW_SHOT}

FewShot = str | Sequence[FewShotNeuron]


def resolve_few_shot(few_shot: FewShot) -> tuple[FewShotNeuron, ...]:
    """A few-shot set by name (see FEW_SHOT_SETS), or the given neurons themselves."""
    if isinstance(few_shot, str):
        if few_shot not in FEW_SHOT_SETS:
            raise InputError(
                f"unknown few-shot set {few_shot!r}; known sets: {', '.join(sorted(FEW_SHOT_SETS))}"
            )
        return FEW_SHOT_SETS[few_shot]
    return tuple(few_shot)


def few_shot_hash(few_shot: FewShot) -> str:
    """A content hash (sha256 hex) of a few-shot set, for cache keys and lineage."""
    content = [
        {
            "explanation": n.explanation,
            "records": [[r.tokens, [float(a) for a in r.activations]] for r in n.records],
        }
        for n in resolve_few_shot(few_shot)
    ]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def display_token(token: str) -> str:
    """A token as written in a prompt line: newline, tab and carriage return escaped."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def normalize_activations(records: Sequence[ActivationRecord]) -> list[list[int]]:
    """`min(10, floor(10 · relu(x) / max))` with max the largest relu'd activation over all the
    records; all zeros when that max is not positive."""
    peak = max((max(r.activations, default=0.0) for r in records), default=0.0)
    if not peak > 0:
        return [[0] * len(r.activations) for r in records]
    return [
        [min(MAX_NORMALIZED_ACTIVATION, math.floor(10 * max(a, 0.0) / peak)) for a in r.activations]
        for r in records
    ]


def format_record(tokens: Sequence[str], values: Sequence[object]) -> str:
    """`\\n<start>\\n`, one `token<tab>value` line per token, then `\\n<end>\\n`."""
    lines = "\n".join(f"{display_token(t)}\t{v}" for t, v in zip(tokens, values, strict=True))
    return f"\n<start>\n{lines}\n<end>\n"


def explanation_header(index: int) -> str:
    return f"\nExplanation of neuron {index} behavior: {EXPLANATION_LEAD}"


def explainer_block(index: int, records: Sequence[ActivationRecord]) -> str:
    """One neuron's block: its records, their zeros-filtered repeat when activations are sparse,
    and the line the explanation completes."""
    values = normalize_activations(records)
    text = f"\n\nNeuron {index}\nActivations:"
    text += "".join(format_record(r.tokens, v) for r, v in zip(records, values, strict=True))
    shown = [v for vs in values for v in vs]
    # Sparsity is judged on the displayed values: those are the zeros the repeat filters out.
    if shown and sum(v > 0 for v in shown) < ZEROS_FILTER_THRESHOLD * len(shown):
        text += "\nSame activations, but with all zeros filtered out:"
        for record, vs in zip(records, values, strict=True):
            kept = [(t, v) for t, v in zip(record.tokens, vs, strict=True) if v > 0]
            text += format_record([t for t, _ in kept], [v for _, v in kept])
    return text + explanation_header(index)


def few_shot_answer(explanation: str) -> str:
    """How a worked answer is written after the block's last line."""
    return f" {explanation}."


def estimate_tokens(text: str) -> int:
    """A rough token count for prompt budgets when no tokenizer is at hand: words, single
    punctuation marks, tabs and newlines count one each (close to BPE on these line prompts)."""
    return len(re.findall(r"\w+|[^\w\s]|[\t\n]", text))


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
        return hashlib.sha256(json.dumps(self.messages).encode()).hexdigest()


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


def top_tokens_by_mean(
    records: Sequence[ActivationRecord], *, top: int = 100, shown: int = 50, seed: int = 0
) -> list[str]:
    """`shown` of the `top` token strings with the highest mean activation over the records,
    chosen at random (seeded, so deterministic) and listed in rank order."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for record in records:
        for token, activation in zip(record.tokens, record.activations, strict=True):
            totals[token] = totals.get(token, 0.0) + float(activation)
            counts[token] = counts.get(token, 0) + 1
    ranked = sorted(totals, key=lambda t: (-totals[t] / counts[t], t))[:top]
    if len(ranked) <= shown:
        return ranked
    picks = np.random.default_rng(seed).choice(len(ranked), size=shown, replace=False)
    return [ranked[i] for i in sorted(picks)]


def token_list_block(index: int, tokens: Sequence[str]) -> str:
    """A neuron's block in the token-list variant: its top tokens as JSON strings."""
    listed = ", ".join(json.dumps(t, ensure_ascii=False) for t in tokens)
    return f"\n\nNeuron {index}\nTop tokens: {listed}" + explanation_header(index)


def build_token_list_explanation_request(
    records: Sequence[ActivationRecord],
    *,
    few_shot: FewShot = "default",
    seed: int = 0,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> ExplanationRequest:
    """The token-list explainer variant: the neuron is shown as 50 of its top 100 tokens by mean
    activation over `records`, after few-shot neurons shown the same way."""
    if not records:
        raise InputError("the explainer needs at least one activation record")
    examples = resolve_few_shot(few_shot)
    turns = [
        (
            token_list_block(i + 1, top_tokens_by_mean(n.records, seed=seed)),
            few_shot_answer(n.explanation),
        )
        for i, n in enumerate(examples)
    ]
    target = token_list_block(len(examples) + 1, top_tokens_by_mean(records, seed=seed))
    messages = _messages(TOKEN_LIST_SYSTEM_MESSAGE, turns, target)
    return ExplanationRequest(
        messages=messages,
        prompt_version=TOKEN_LIST_PROMPT_VERSION,
        few_shot_hash=few_shot_hash(examples),
        prompt_tokens=count_tokens("".join(m["content"] for m in messages)),
    )


# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e"})
_SENTENCE_END = re.compile(r"[.!?]\s+(?=[A-Z])")


def parse_explanation(text: str) -> str:
    """The explanation in a completion of "…the main thing this neuron does is find": its first
    line, cut at the first sentence end, without a trailing period. Empty: ResponseParseError."""
    lines = [line.strip() for line in text.strip().splitlines()]
    explanation = lines[0] if lines else ""
    for end in _SENTENCE_END.finditer(explanation):
        before = explanation[: end.start()].rsplit(maxsplit=1)
        if not before or before[-1].lower() not in _ABBREVIATIONS:
            explanation = explanation[: end.start() + 1]
            break
    explanation = explanation.rstrip()
    if explanation.endswith("."):
        explanation = explanation[:-1].rstrip()
    if not explanation:
        raise ResponseParseError(f"no explanation in the explainer's response {text!r}")
    return explanation
