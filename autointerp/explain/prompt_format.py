"""The pieces every prompt is built from (explainer, simulator, counterexample generation,
revision), so the reference format exists once.

Records are listed as the reference lists them (`format_records`), one `token<tab>value` line per
token, with values normalized as `min(10, floor(10 · relu(x) / max))` over the records shown
together. One choice of this project: a token holding a newline, tab or carriage return is
written escaped (`\\n`, `\\t`, `\\r`), so that one token stays one `token<tab>value` line; the
simulators rely on it to read their answers back line by line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.activations.data_model import ActivationRecord, peak_activation
from autointerp.errors import AutointerpError
from autointerp.storage.hashing import digest

MAX_NORMALIZED_ACTIVATION = 10
# Below this share of nonzero displayed activations, the records are repeated without the zeros.
ZEROS_FILTER_THRESHOLD = 0.2
EXPLANATION_LEAD = "the main thing this neuron does is find"

# How every system message opens, and how it describes the record format.
STUDY_INTRO = (
    "This is a study of the neurons of a neural network language model. A neuron responds to "
    "some particular feature of the text it reads."
)
ACTIVATION_FORMAT = (
    "token<tab>activation, where the activation is a whole number from 0 to 10: 0 means no "
    "response to that token, and larger values mean a stronger response."
)


class ResponseParseError(AutointerpError):
    """An LLM response cannot be read as the answer the prompt asked for."""


def messages_hash(messages: list[dict[str, str]]) -> str:
    """The hash of a prompt as sent (its messages), recorded as `prompt_hash`."""
    return digest(messages)


@dataclass(frozen=True)
class ChatPrompt:
    """A chat request's messages as plain data, with the version of the template that wrote it."""

    messages: list[dict[str, str]]
    prompt_version: str

    @property
    def prompt_hash(self) -> str:
        return messages_hash(self.messages)


def display_token(token: str) -> str:
    """A token as written in a prompt line: newline, tab and carriage return escaped."""
    return token.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def normalize_activations(records: Sequence[ActivationRecord]) -> list[list[int]]:
    """`min(10, floor(10 · relu(x) / max))` with max the largest relu'd activation over all the
    records; all zeros when that max is not positive."""
    peak = peak_activation(records)
    if not peak > 0:
        return [[0] * len(r.activations) for r in records]
    return [
        [min(MAX_NORMALIZED_ACTIVATION, math.floor(10 * max(a, 0.0) / peak)) for a in r.activations]
        for r in records
    ]


def record_lines(tokens: Sequence[str], values: Sequence[object]) -> str:
    """One `token<tab>value` line per token."""
    return "\n".join(f"{display_token(t)}\t{v}" for t, v in zip(tokens, values, strict=True))


def format_records(records: Sequence[tuple[Sequence[str], Sequence[object]]]) -> str:
    """(tokens, values) records as the reference lists them: `<start>` on its own line, each
    record's lines, records separated by an `<end>` line and a `<start>` line, a final `<end>`."""
    body = "\n<end>\n<start>\n".join(record_lines(t, v) for t, v in records)
    return f"\n<start>\n{body}\n<end>\n"


def explanation_header(index: int) -> str:
    return f"\nExplanation of neuron {index} behavior: {EXPLANATION_LEAD}"


def explanation_line(index: int, explanation: str) -> str:
    """The header completed by an explanation, as the simulator prompts state it."""
    return f"{explanation_header(index)} {explanation.strip()}"


def explainer_block(index: int, records: Sequence[ActivationRecord]) -> str:
    """One neuron's block: its records, their zeros-filtered repeat when activations are sparse,
    and the line the explanation completes."""
    values = normalize_activations(records)
    text = f"\n\nNeuron {index}\nActivations:"
    text += format_records([(r.tokens, v) for r, v in zip(records, values, strict=True)])
    shown = [v for vs in values for v in vs]
    # Sparsity is judged on the displayed values: those are the zeros the repeat filters out.
    if shown and sum(v > 0 for v in shown) < ZEROS_FILTER_THRESHOLD * len(shown):
        text += "\nSame activations, but with all zeros filtered out:"
        filtered = []
        for record, vs in zip(records, values, strict=True):
            kept = [(t, v) for t, v in zip(record.tokens, vs, strict=True) if v > 0]
            filtered.append(([t for t, _ in kept], [v for _, v in kept]))
        text += format_records(filtered)
    return text + explanation_header(index)


def few_shot_answer(explanation: str) -> str:
    """How a worked answer is written after the block's last line."""
    return f" {explanation}."


def estimate_tokens(text: str) -> int:
    """A rough token count for prompt budgets when no tokenizer is at hand: words, single
    punctuation marks, tabs and newlines count one each (close to BPE on these line prompts)."""
    return len(re.findall(r"\w+|[^\w\s]|[\t\n]", text))


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
