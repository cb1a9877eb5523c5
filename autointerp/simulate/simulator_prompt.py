"""The simulator's prompts: requests that ask an LLM to predict a neuron's activations from an
explanation (REFERENCE.md "Simulator"), as plain data; `parsers` reads the replies, and sending
the requests is the LLM client's job.

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

from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.explain.few_shot import FewShot, FewShotNeuron, few_shot_hash, resolve_few_shot
from autointerp.explain.prompt_format import (
    ACTIVATION_FORMAT,
    STUDY_INTRO,
    display_token,
    explanation_line,
    format_records,
    normalize_activations,
    record_lines,
)

SIMULATOR_PROMPT_VERSION = "simulator-v2"
CHAT_LOGPROBS = "chat-logprobs"
ALL_AT_ONCE = "all-at-once"
PLAIN_TEXT = "plain-text"

TOP_LOGPROBS = 15  # the reference asks for 15 alternatives per position
UNKNOWN = "unknown"
# The all-at-once call reads only the echoed prompt. It asks for ONE generated token, the least
# every server honours (llama-cpp-python reads max_tokens 0 as "until the context is full"), and
# the parser ignores that token.
ALL_AT_ONCE_PARAMS = {"max_tokens": 1, "echo": True, "logprobs": TOP_LOGPROBS, "temperature": 0.0}

_SIMULATOR_INTRO = (
    f"{STUDY_INTRO} Each neuron below comes with an explanation of what it responds to, and "
    f"excerpts written one token per line as {ACTIVATION_FORMAT}"
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
    sampling options. All-at-once only: `answer_offsets` are the character offsets in the
    prompt of each target token's `unknown`, `token_offsets` those of the token itself.
    """

    method: str
    tokens: tuple[str, ...]
    params: dict[str, object]
    prompt_version: str
    few_shot_hash: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    answer_offsets: tuple[int, ...] = ()
    token_offsets: tuple[int, ...] = ()


def _few_shot_blocks(examples: Sequence[FewShotNeuron]) -> str:
    """Few-shot neurons as the reference writes them: the explanation, then the records with
    each one's first tokens hidden as `unknown` before its values are revealed."""
    text = ""
    for i, neuron in enumerate(examples, start=1):
        values = normalize_activations(neuron.records)
        starts = neuron.first_revealed or (0,) * len(neuron.records)
        shown = [
            (record.tokens, [UNKNOWN] * start + vs[start:])
            for record, vs, start in zip(neuron.records, values, starts, strict=True)
        ]
        text += f"\n\nNeuron {i}{explanation_line(i, neuron.explanation)}"
        text += f"\nActivations: {format_records(shown)}\n"
    return text


def build_all_at_once_request(
    explanation: str, tokens: Sequence[str], *, few_shot: FewShot = "default"
) -> SimulationRequest:
    """The reference's simulation: one completion call whose prompt ends with the target's tokens
    as `token<tab>unknown` lines, read entirely from the echoed prompt's logprobs."""
    examples = resolve_few_shot(few_shot)
    index = len(examples) + 1
    prompt = COMPLETION_SYSTEM_MESSAGE + _few_shot_blocks(examples)
    prompt += f"\n\nNeuron {index}{explanation_line(index, explanation)}\nActivations: \n<start>\n"
    answers, starts = [], []
    for j, token in enumerate(tokens):
        if j:
            prompt += "\n"
        starts.append(len(prompt))
        prompt += f"{display_token(token)}\t"
        answers.append(len(prompt))
        prompt += UNKNOWN
    prompt += "\n<end>\n"
    return SimulationRequest(
        method=ALL_AT_ONCE,
        tokens=tuple(tokens),
        params=dict(ALL_AT_ONCE_PARAMS),
        prompt_version=SIMULATOR_PROMPT_VERSION,
        few_shot_hash=few_shot_hash(examples),
        prompt=prompt,
        answer_offsets=tuple(answers),
        token_offsets=tuple(starts),
    )


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
                {"role": "assistant", "content": record_lines(record.tokens, vs)},
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
    return f"Neuron {index}{explanation_line(index, explanation)}\nTokens:\n{listed}"
