"""OpenAI-shaped response bodies turned into plain Python, tolerant of what local servers omit.

Bodies are parsed from their JSON text rather than through the `openai` package's models, so that a
cached body and a fresh one go through the same code, and so that vLLM / llama.cpp / Ollama replies
with missing or extra fields still parse. A missing or non-numeric logprob becomes None.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["chat", "completion"]


class InvalidResponse(Exception):
    """A 200 reply that cannot be used. `retryable`: worth asking again (a garbled transfer)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token of a chat completion, with its alternatives (most likely first)."""

    token: str
    logprob: float | None
    top_logprobs: list[tuple[str, float | None]]


@dataclass(frozen=True)
class CompletionLogprobs:
    """The completions endpoint's parallel lists; with `echo=True` they start with the prompt."""

    tokens: list[str]
    token_logprobs: list[float | None]  # the first prompt token has none
    top_logprobs: list[dict[str, float | None] | None]
    text_offset: list[int | None]


Logprobs = list[TokenLogprob] | CompletionLogprobs


@dataclass(frozen=True)
class ParsedResponse:
    texts: list[str]  # one per choice
    finish_reasons: list[str | None]
    logprobs: list[Logprobs | None]  # one per choice; None where the reply carried none
    prompt_tokens: int | None
    completion_tokens: int | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if not math.isnan(value) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _chat_logprobs(raw: Any) -> list[TokenLogprob] | None:
    content = raw.get("content") if isinstance(raw, dict) else None
    if not isinstance(content, list):
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict):
            continue
        top = entry.get("top_logprobs") or []
        tokens.append(
            TokenLogprob(
                token=str(entry.get("token", "")),
                logprob=_number(entry.get("logprob")),
                top_logprobs=[
                    (str(t.get("token", "")), _number(t.get("logprob")))
                    for t in top
                    if isinstance(t, dict)
                ],
            )
        )
    return tokens


def completion_logprobs(raw: Any) -> CompletionLogprobs | None:
    """A completions `logprobs` object ({tokens, token_logprobs, top_logprobs, text_offset}),
    with missing or malformed entries as None; None when it has no token list."""
    if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), list):
        return None
    tokens = [str(t) for t in raw["tokens"]]
    n = len(tokens)

    def column(name: str) -> list[Any]:
        values = raw.get(name)
        values = values if isinstance(values, list) else []
        return (values + [None] * n)[:n]

    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[_number(v) for v in column("token_logprobs")],
        top_logprobs=[
            {str(k): _number(v) for k, v in top.items()} if isinstance(top, dict) else None
            for top in column("top_logprobs")
        ],
        text_offset=[_count(v) for v in column("text_offset")],
    )


def parse_response(kind: Kind, body: str) -> ParsedResponse:
    """Parse a response body; raise InvalidResponse when it is not a usable reply."""
    try:
        data = json.loads(body)
    except ValueError:
        # Garbled or cut-off bodies come from proxies and overloaded servers: worth a retry.
        raise InvalidResponse(f"reply is not JSON: {body[:200]!r}", retryable=True) from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        # Well-formed but empty: the same request would most likely get the same answer.
        raise InvalidResponse("reply has no choices", retryable=False)
    texts, finish_reasons, logprobs = [], [], []
    for choice in sorted(
        (c for c in choices if isinstance(c, dict)), key=lambda c: _count(c.get("index")) or 0
    ):
        if kind == "chat":
            message = choice.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            logprobs.append(_chat_logprobs(choice.get("logprobs")))
        else:
            content = choice.get("text")
            logprobs.append(completion_logprobs(choice.get("logprobs")))
        texts.append(content if isinstance(content, str) else "")
        reason = choice.get("finish_reason")
        finish_reasons.append(reason if isinstance(reason, str) else None)
    if not texts:
        raise InvalidResponse("reply has no usable choices", retryable=False)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ParsedResponse(
        texts=texts,
        finish_reasons=finish_reasons,
        logprobs=logprobs,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
    )
