"""Reading a simulator's reply: expected activations (0–10) for every target token
(REFERENCE.md "Simulator").

- all-at-once: the echoed prompt logprobs at each `unknown` give EV = Σ v · p(v);
- chat with logprobs: the top logprobs at the position of each line's number;
- plain text: the numbers as written.

Logprobs arrive as the LLM client parsed them (`autointerp.llm.responses`), or as the raw JSON
objects of a reply (tests, recorded responses), which are parsed the same way.
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
from autointerp.explain.prompt_format import ResponseParseError, display_token
from autointerp.llm.responses import CompletionLogprobs, TokenLogprob, completion_logprobs
from autointerp.simulate.simulator_prompt import ALL_AT_ONCE, SimulationRequest

_VALUES = np.arange(11, dtype=np.float64)
_NUMERIC = {str(v): v for v in range(11)}


@dataclass(frozen=True)
class SimulationResult:
    """Expected activations (0–10) for every target token, and where they are not expectations.

    `missing`: positions the response gave no usable value for; their activation is None, and
    scoring leaves them out. `sampled`: positions whose value is the number the model wrote, not
    an expectation over its logprobs. `folded`: all-at-once positions whose token the echo
    folded together with the newline before it; the reference sets their value to 0.
    `shifted`: all-at-once only, the echo's logprobs were read one position earlier (a server
    that reports at each token the distribution over the next one, see parse_all_at_once).
    """

    expected_activations: list[float | None]
    missing: list[int] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)
    shifted: bool = False


Alternatives = Sequence[tuple[str, float | None]]


def _pairs(raw: object) -> list[tuple[str, float | None]]:
    """Top logprobs given as a {token: logprob} mapping, [(token, logprob)] pairs, or
    [{"token", "logprob"}] objects (OpenAI chat), or None."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):
        return [(str(t), None if lp is None else float(lp)) for t, lp in raw.items()]
    pairs = []
    for item in raw:
        token, logprob = (item["token"], item["logprob"]) if isinstance(item, Mapping) else item
        pairs.append((str(token), None if logprob is None else float(logprob)))
    return pairs


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
                top_logprobs=_pairs(entry.get("top_logprobs")),
            )
        )
    return positions


def _echo_positions(logprobs: CompletionLogprobs) -> tuple[list[TokenLogprob], list[int] | None]:
    """Positions of an echoed completion, and their text offsets when the server gave every
    one (otherwise they are rebuilt from token lengths)."""
    positions = [
        TokenLogprob(token=t, logprob=lp, top_logprobs=_pairs(top))
        for t, lp, top in zip(
            logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
        )
    ]
    offsets = logprobs.text_offset
    return positions, None if any(o is None for o in offsets) else list(offsets)


def expected_value(alternatives: Alternatives) -> float | None:
    """Σ v · p(v) over the alternatives whose token (whitespace stripped) is "0" … "10", with
    their probabilities renormalized to sum to one; None when no alternative is a number.

    Alternatives that read as the same number (" 3" and "3") add up.
    """
    probabilities = np.zeros(11)
    for token, logprob in alternatives:
        value = _NUMERIC.get(token.strip())
        if value is not None and logprob is not None and math.isfinite(logprob):
            probabilities[value] += math.exp(logprob)
    total = probabilities.sum()
    if total <= 0:
        return None
    return float(np.dot(_VALUES, probabilities) / total)


def _token_starts(
    positions: Sequence[TokenLogprob], prompt: str, text_offsets: Sequence[int] | None
) -> list[int]:
    """Where each echoed token starts in the prompt. Without the endpoint's text offsets, the
    tokens' cumulative lengths, shifted when the echo carries a prefix (a BOS token's text);
    a generated token after the prompt does not move them."""
    if text_offsets is not None:
        return list(text_offsets)
    starts = np.cumsum([0] + [len(p.token) for p in positions[:-1]]).tolist()
    shift = max("".join(p.token for p in positions).find(prompt), 0)
    return [s - shift for s in starts]


def parse_all_at_once(
    request: SimulationRequest,
    logprobs: CompletionLogprobs | Mapping | Sequence[TokenLogprob | Mapping],
) -> SimulationResult:
    """Expected values at each target token's `unknown` from an echoed prompt's logprobs.

    `logprobs` is a completions `logprobs` object (parsed or raw) or a list of positions, placed
    in the prompt by their text offsets; tokens generated after the prompt are ignored. The
    distribution over the token that starts exactly at `unknown` predicts the value after the
    tab. Servers disagree on where that distribution is reported: OpenAI and vLLM give it at
    that token's own position; llama.cpp (llama-cpp-python) for a model whose tokenizer adds no
    BOS gives at each position the distribution over the NEXT token, one position early. Both
    readings are tried and the one that finds numbers at more targets is kept (`shifted` says
    which): at the right position the model predicts a number after the tab, at the wrong one
    the tab itself or the newline after `unknown`.

    As in the reference, where the echo folded the newline before a target token into that
    token, the model never saw the token on its own and its value is 0 (reported as folded). A
    target whose `unknown` does not start a token (the tab folded into it), or whose
    alternatives hold no number, gives no value (reported as missing).
    """
    if request.method != ALL_AT_ONCE or request.prompt is None:
        raise InputError("parse_all_at_once reads responses to build_all_at_once_request")
    if isinstance(logprobs, Mapping):
        logprobs = completion_logprobs(logprobs)
    if isinstance(logprobs, CompletionLogprobs):
        positions, text_offsets = _echo_positions(logprobs)
    else:
        positions, text_offsets = as_token_logprobs(logprobs), None
    if not positions:
        raise ResponseParseError("the completion echoed no prompt tokens")
    starts = _token_starts(positions, request.prompt, text_offsets)
    folded: list[int] = []
    at: list[int | None] = []  # per target: the position starting at its `unknown`, if any
    for j, (offset, token_start) in enumerate(
        zip(request.answer_offsets, request.token_offsets, strict=True)
    ):
        i = bisect.bisect_right(starts, offset) - 1
        token = positions[i].token if i >= 0 else ""
        if i < 0 or starts[i] + len(token) <= offset:
            raise ResponseParseError(f"no echoed token covers target token {j}'s activation")
        if request.prompt[starts[i] : starts[i] + len(token)] != token:
            raise ResponseParseError(
                f"echoed token {token!r} does not match the prompt at target token {j}"
            )
        first = bisect.bisect_right(starts, token_start) - 1  # the echo of the target token
        if token_start < offset - 1 and first >= 0 and starts[first] < token_start:
            folded.append(j)
        at.append(i if starts[i] == offset else None)

    def read(shift: int) -> list[float | None]:
        return [
            None if i is None or i < shift else expected_value(positions[i - shift].top_logprobs)
            for i in at
        ]

    aligned, early = read(0), read(1)
    shifted = sum(v is not None for v in early) > sum(v is not None for v in aligned)
    values = early if shifted else aligned
    expected = [0.0 if j in folded else v for j, v in enumerate(values)]
    missing = [j for j, v in enumerate(expected) if v is None]
    return SimulationResult(
        expected_activations=expected, missing=missing, folded=folded, shifted=shifted
    )


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
            alternatives = [(t, lp) for t, lp in position.top_logprobs if lp is not None]
            if position.logprob is not None and position.token not in dict(alternatives):
                alternatives.append((position.token, position.logprob))
            value = expected_value(alternatives)
        line_values.append((line.value, True) if value is None else (value, False))
    return _result(request.tokens, lines, line_values)


def _result(
    tokens: Sequence[str], lines: Sequence[_Line], line_values: Sequence[tuple[float | None, bool]]
) -> SimulationResult:
    expected: list[float | None] = []
    missing: list[int] = []
    sampled: list[int] = []
    for j, line_index in enumerate(_align(tokens, lines)):
        value, was_sampled = (None, False) if line_index is None else line_values[line_index]
        if value is None:
            missing.append(j)
        elif was_sampled:
            sampled.append(j)
        expected.append(value)
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
