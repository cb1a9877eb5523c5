"""The simulator: requests that ask an LLM to predict a neuron's activations from an
explanation, and parsers that turn its responses into expected activations (REFERENCE.md
"Simulator"). Plain data in, numbers out; sending the requests is the LLM client's job.

Three families, one result type (expected activations on the 0–10 scale, one per target token):
- chat with logprobs: the model writes `token<tab>number` lines, and each number's expected value
  is read from the top logprobs at the position where the number was generated;
- all-at-once with echo (the reference): a completion prompt ends with the target's tokens as
  `token<tab>unknown` lines, and the echoed prompt logprobs at each `unknown` give the expected
  value, with no generated token at all;
- plain text: the numbers the model wrote, when no logprobs are available.

Every prompt starts with the same system message and few-shot neurons (with revealed activations),
byte-identical across neurons, so providers' prompt caching applies to them.
"""

from __future__ import annotations

import bisect
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from autointerp.errors import InputError
from autointerp.prompts import (
    EXPLANATION_LEAD,
    FewShot,
    FewShotNeuron,
    ResponseParseError,
    display_token,
    few_shot_hash,
    format_record,
    normalize_activations,
    resolve_few_shot,
)

SIMULATOR_PROMPT_VERSION = "simulator-v1"
CHAT_LOGPROBS = "chat-logprobs"
ALL_AT_ONCE = "all-at-once"
PLAIN_TEXT = "plain-text"

TOP_LOGPROBS = 15  # the reference asks for 15 alternatives per position
UNKNOWN = "unknown"
_VALUES = np.arange(11, dtype=np.float64)
_NUMERIC = {str(v): v for v in range(11)}

_SIMULATOR_INTRO = (
    "This is a study of the neurons of a neural network language model. A neuron responds to "
    "some particular feature of the text it reads. Each neuron below comes with an explanation "
    "of what it responds to, and excerpts written one token per line as token<tab>activation, "
    "where the activation is a whole number from 0 to 10: 0 means no response to that token, "
    "and larger values mean a stronger response."
)
COMPLETION_SYSTEM_MESSAGE = (
    _SIMULATOR_INTRO + " Where an activation reads unknown, it is to be predicted from the "
    "explanation."
)
CHAT_SYSTEM_MESSAGE = (
    _SIMULATOR_INTRO + " You are given the explanation and the tokens of an excerpt. Predict the "
    "activations: reply with the same tokens in the same order, one per line, each followed by "
    "a tab and the predicted activation, and write nothing else."
)


@dataclass(frozen=True)
class SimulationRequest:
    """One simulator call as plain data.

    `messages` (chat) or `prompt` (completion) is what to send, with `params` as the request's
    sampling options. `answer_offsets` (all-at-once only) are the character offsets in the
    prompt of each target token's `unknown`.
    """

    method: str
    tokens: tuple[str, ...]
    params: dict[str, object]
    prompt_version: str
    few_shot_hash: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    answer_offsets: tuple[int, ...] = ()


@dataclass(frozen=True)
class SimulationResult:
    """Expected activations (0–10) for every target token, and where they are not expectations.

    `missing`: positions the response gave no usable value for; their activation is 0 (so a
    sequence still scores). `sampled`: positions whose value is the number the model wrote, not
    an expectation over its logprobs.
    """

    expected_activations: list[float]
    missing: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TokenLogprob:
    """One token position: the token, its logprob and the top alternatives at that position."""

    token: str
    logprob: float | None
    top_logprobs: tuple[tuple[str, float], ...]


def _alternatives(raw: object) -> tuple[tuple[str, float], ...]:
    """Top logprobs given as a {token: logprob} mapping, [(token, logprob)] pairs, or
    [{"token", "logprob"}] objects (OpenAI chat), or None."""
    if raw is None:
        return ()
    if isinstance(raw, Mapping):
        return tuple((str(t), float(lp)) for t, lp in raw.items())
    pairs = []
    for item in raw:
        if isinstance(item, Mapping):
            pairs.append((str(item["token"]), float(item["logprob"])))
        else:
            token, logprob = item
            pairs.append((str(token), float(logprob)))
    return tuple(pairs)


def as_token_logprobs(entries: Sequence[TokenLogprob | Mapping]) -> list[TokenLogprob]:
    """Token positions from TokenLogprob objects or {token, logprob, top_logprobs} mappings."""
    positions = []
    for entry in entries:
        if isinstance(entry, TokenLogprob):
            positions.append(entry)
            continue
        logprob = entry.get("logprob")
        positions.append(
            TokenLogprob(
                token=str(entry["token"]),
                logprob=None if logprob is None else float(logprob),
                top_logprobs=_alternatives(entry.get("top_logprobs")),
            )
        )
    return positions


def completion_logprobs(logprobs: Mapping) -> tuple[list[TokenLogprob], list[int] | None]:
    """Positions and text offsets from a completions response's `logprobs` object
    ({tokens, token_logprobs, top_logprobs, text_offset}; the first top_logprobs may be None)."""
    tokens = logprobs["tokens"]
    token_logprobs = logprobs.get("token_logprobs") or [None] * len(tokens)
    top = logprobs.get("top_logprobs") or [None] * len(tokens)
    positions = [
        TokenLogprob(
            token=str(t),
            logprob=None if lp is None else float(lp),
            top_logprobs=_alternatives(alts),
        )
        for t, lp, alts in zip(tokens, token_logprobs, top, strict=True)
    ]
    offsets = logprobs.get("text_offset")
    return positions, None if offsets is None else [int(o) for o in offsets]


def expected_value(alternatives: Sequence[tuple[str, float]]) -> float | None:
    """Σ v · p(v) over the alternatives whose token (whitespace stripped) is "0" … "10", with
    their probabilities renormalized to sum to one; None when no alternative is a number.

    Alternatives that read as the same number (" 3" and "3") add up.
    """
    probabilities = np.zeros(11)
    for token, logprob in alternatives:
        value = _NUMERIC.get(token.strip())
        if value is not None and math.isfinite(logprob):
            probabilities[value] += math.exp(logprob)
    total = probabilities.sum()
    if total <= 0:
        return None
    return float(np.dot(_VALUES, probabilities) / total)


def _explanation_line(index: int, explanation: str) -> str:
    sentence = explanation.strip().removesuffix(".")
    return f"\nExplanation of neuron {index} behavior: {EXPLANATION_LEAD} {sentence}."


def _few_shot_blocks(examples: Sequence[FewShotNeuron]) -> str:
    """Few-shot neurons with their explanations and revealed activations."""
    text = ""
    for i, neuron in enumerate(examples, start=1):
        values = normalize_activations(neuron.records)
        text += f"\n\nNeuron {i}" + _explanation_line(i, neuron.explanation) + "\nActivations:"
        text += "".join(
            format_record(r.tokens, v) for r, v in zip(neuron.records, values, strict=True)
        )
    return text


def build_all_at_once_request(
    explanation: str, tokens: Sequence[str], *, few_shot: FewShot = "default"
) -> SimulationRequest:
    """The reference's simulation: one completion call with `max_tokens=0, echo=True,
    logprobs=15`, read entirely from the echoed prompt's logprobs."""
    examples = resolve_few_shot(few_shot)
    index = len(examples) + 1
    prompt = COMPLETION_SYSTEM_MESSAGE + _few_shot_blocks(examples)
    prompt += f"\n\nNeuron {index}" + _explanation_line(index, explanation) + "\nActivations:"
    prompt += "\n<start>\n"
    offsets = []
    for j, token in enumerate(tokens):
        if j:
            prompt += "\n"
        prompt += f"{display_token(token)}\t"
        offsets.append(len(prompt))
        prompt += UNKNOWN
    prompt += "\n<end>\n"
    return SimulationRequest(
        method=ALL_AT_ONCE,
        tokens=tuple(tokens),
        params={"max_tokens": 0, "echo": True, "logprobs": TOP_LOGPROBS, "temperature": 0.0},
        prompt_version=SIMULATOR_PROMPT_VERSION,
        few_shot_hash=few_shot_hash(examples),
        prompt=prompt,
        answer_offsets=tuple(offsets),
    )


def _token_starts(
    positions: Sequence[TokenLogprob], prompt: str, text_offsets: Sequence[int] | None
) -> list[int]:
    """Where each echoed token starts in the prompt. Without the endpoint's text offsets, the
    tokens' cumulative lengths, shifted when the echo carries a prefix (a BOS token's text)."""
    if text_offsets is not None:
        return list(text_offsets)
    starts = np.cumsum([0] + [len(p.token) for p in positions[:-1]]).tolist()
    echoed = "".join(p.token for p in positions)
    shift = len(echoed) - len(prompt) if echoed.endswith(prompt) else 0
    return [s - shift for s in starts]


def parse_all_at_once(
    request: SimulationRequest,
    logprobs: Mapping | Sequence[TokenLogprob | Mapping],
) -> SimulationResult:
    """Expected values at each target token's `unknown` from an echoed prompt's logprobs.

    `logprobs` is a completions `logprobs` object or a list of positions. A position only
    predicts the token after the tab when it starts exactly at `unknown`; where the tokenizer
    folded the tab or a newline into that token, the expected value is 0 (as in the reference),
    as it is where no alternative is a number. Both are reported as missing.
    """
    if request.method != ALL_AT_ONCE or request.prompt is None:
        raise InputError("parse_all_at_once reads responses to build_all_at_once_request")
    if isinstance(logprobs, Mapping):
        positions, text_offsets = completion_logprobs(logprobs)
    else:
        positions, text_offsets = as_token_logprobs(logprobs), None
    if not positions:
        raise ResponseParseError("the completion echoed no prompt tokens")
    starts = _token_starts(positions, request.prompt, text_offsets)
    expected: list[float] = []
    missing: list[int] = []
    for j, offset in enumerate(request.answer_offsets):
        i = bisect.bisect_right(starts, offset) - 1
        token = positions[i].token if i >= 0 else ""
        if i < 0 or starts[i] + len(token) <= offset:
            raise ResponseParseError(f"no echoed token covers target token {j}'s activation")
        if starts[i] != offset:
            value = None  # folded into a token that began before the tab's end
        else:
            if request.prompt[offset : offset + len(token)] != token:
                raise ResponseParseError(
                    f"echoed token {token!r} does not match the prompt at target token {j}"
                )
            value = expected_value(positions[i].top_logprobs)
        if value is None:
            missing.append(j)
        expected.append(0.0 if value is None else value)
    return SimulationResult(expected_activations=expected, missing=missing)


def build_chat_request(
    explanation: str,
    tokens: Sequence[str],
    *,
    few_shot: FewShot = "default",
    logprobs: bool = True,
) -> SimulationRequest:
    """The chat simulation: the model writes one `token<tab>number` line per target token.

    Each few-shot record is a user turn (explanation and tokens) answered by an assistant turn
    (the revealed lines). With `logprobs=False` the request suits endpoints without logprobs,
    whose text is read by parse_plain_text.
    """
    examples = resolve_few_shot(few_shot)
    messages = [{"role": "system", "content": CHAT_SYSTEM_MESSAGE}]
    for i, neuron in enumerate(examples, start=1):
        values = normalize_activations(neuron.records)
        for record, vs in zip(neuron.records, values, strict=True):
            messages += [
                {"role": "user", "content": _chat_question(i, neuron.explanation, record.tokens)},
                {"role": "assistant", "content": _lines(record.tokens, vs)},
            ]
    index = len(examples) + 1
    messages.append({"role": "user", "content": _chat_question(index, explanation, tokens)})
    # Room for each line's token, tab, number and newline, with slack for long tokens.
    params: dict[str, object] = {"temperature": 0.0, "max_tokens": 8 * len(tokens) + 16}
    if logprobs:
        params |= {"logprobs": True, "top_logprobs": TOP_LOGPROBS}
    return SimulationRequest(
        method=CHAT_LOGPROBS if logprobs else PLAIN_TEXT,
        tokens=tuple(tokens),
        params=params,
        prompt_version=SIMULATOR_PROMPT_VERSION,
        few_shot_hash=few_shot_hash(examples),
        messages=messages,
    )


def _chat_question(index: int, explanation: str, tokens: Sequence[str]) -> str:
    listed = "\n".join(display_token(t) for t in tokens)
    return f"Neuron {index}" + _explanation_line(index, explanation) + f"\nTokens:\n{listed}"


def _lines(tokens: Sequence[str], values: Sequence[object]) -> str:
    return "\n".join(f"{display_token(t)}\t{v}" for t, v in zip(tokens, values, strict=True))


@dataclass(frozen=True)
class _Line:
    token: str  # as the model wrote it
    value: float | None  # the number it wrote, clipped to 0–10
    start: int  # offsets of the number in the response text
    end: int


_NUMBER = re.compile(r"\s*(\d+(?:\.\d+)?)")


def _read_lines(text: str) -> list[_Line]:
    """The response's `token<tab>number` lines; lines without a tab are not answers."""
    lines = []
    offset = 0
    for line in text.split("\n"):
        if "\t" in line:
            token, rest = line.rsplit("\t", 1)
            number = _NUMBER.match(rest)
            start = offset + len(token) + 1
            if number:
                value = min(10.0, float(number.group(1)))
                lines.append(_Line(token, value, start + number.start(1), start + number.end(1)))
            else:
                lines.append(_Line(token, None, start, start))
        offset += len(line) + 1
    return lines


def _align(tokens: Sequence[str], lines: Sequence[_Line]) -> list[int | None]:
    """For each target token, the index of the line that answers it, or None.

    As many lines as tokens: line i answers token i, whatever the model did to the token's text.
    Otherwise the lines are matched to the tokens by text (case and surrounding whitespace
    ignored), and unmatched runs of equal length pair up in order.
    """
    if len(lines) == len(tokens):
        return list(range(len(tokens)))
    wanted = [display_token(t).strip().lower() for t in tokens]
    written = [line.token.strip().lower() for line in lines]
    matcher = difflib.SequenceMatcher(None, wanted, written, autojunk=False)
    answer: list[int | None] = [None] * len(tokens)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                answer[i1 + k] = j1 + k
    return answer


def parse_chat_logprobs(
    request: SimulationRequest, content: Sequence[TokenLogprob | Mapping]
) -> SimulationResult:
    """Expected values from a chat response's generated tokens and their top logprobs.

    For each line, the position holding the line's number gives EV = Σ v · p(v) over its
    numeric alternatives. Where that position has no numeric alternative, or the number spans
    several tokens (a tokenizer that splits "10" into digits), the written number is used and
    reported as sampled. Target tokens no line answers are 0 and reported as missing.
    """
    positions = as_token_logprobs(content)
    text = "".join(p.token for p in positions)
    starts = np.cumsum([0] + [len(p.token) for p in positions]).tolist()
    lines = _read_lines(text)
    line_values: list[tuple[float | None, bool]] = []
    for line in lines:
        if line.value is None:
            line_values.append((None, False))
            continue
        i = bisect.bisect_right(starts, line.start) - 1
        value = None
        if starts[i + 1] >= line.end:  # the whole number lies in position i
            position = positions[i]
            alternatives = list(position.top_logprobs)
            if position.logprob is not None and position.token not in dict(alternatives):
                alternatives.append((position.token, position.logprob))
            value = expected_value(alternatives)
        line_values.append((line.value, True) if value is None else (value, False))
    return _result(request.tokens, lines, line_values)


def _result(
    tokens: Sequence[str], lines: Sequence[_Line], line_values: Sequence[tuple[float | None, bool]]
) -> SimulationResult:
    expected: list[float] = []
    missing: list[int] = []
    sampled: list[int] = []
    for j, line_index in enumerate(_align(tokens, lines)):
        value, was_sampled = (None, False) if line_index is None else line_values[line_index]
        if value is None:
            missing.append(j)
        elif was_sampled:
            sampled.append(j)
        expected.append(0.0 if value is None else value)
    return SimulationResult(expected_activations=expected, missing=missing, sampled=sampled)


def parse_plain_text(tokens: Sequence[str], text: str) -> SimulationResult:
    """The numbers a response wrote, for endpoints without logprobs (all reported as sampled).

    Reads `token<tab>number` lines aligned to the tokens; failing those, a bare list holding
    exactly one number per token. Anything else: ResponseParseError.
    """
    lines = _read_lines(text)
    if any(line.value is not None for line in lines):
        return _result(tokens, lines, [(line.value, True) for line in lines])
    numbers = [min(10.0, float(n)) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", text)]
    if numbers and len(numbers) == len(tokens):
        return SimulationResult(expected_activations=numbers, sampled=list(range(len(tokens))))
    raise ResponseParseError(
        f"the simulator's text holds neither token<tab>number lines nor {len(tokens)} numbers"
    )
