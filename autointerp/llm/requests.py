"""What goes to an endpoint (`LLMRequest`) and what comes back (`CallResult`), as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from autointerp.errors import InputError
from autointerp.llm.endpoint import Endpoint, recorded_url
from autointerp.llm.responses import Kind, Logprobs

Status = Literal["ok", "cached", "error"]
# Parameters the client owns: the model and payload come from the endpoint and request, and
# streamed replies are not parsed.
_RESERVED_PARAMS = frozenset({"model", "messages", "prompt", "stream"})


@dataclass(frozen=True)
class LLMRequest:
    """One chat or completion request; `params` are the API's (max_tokens, temperature, n,
    logprobs, top_logprobs, echo, stop, ...) and go to the server as given."""

    kind: Kind
    messages: list[dict[str, Any]] | None = None
    prompt: str | list[int] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("chat", "completion"):
            raise InputError(f"LLM request kind must be 'chat' or 'completion', not {self.kind!r}")
        chat = self.kind == "chat"
        if (self.messages is not None, self.prompt is not None) != (chat, not chat):
            raise InputError(
                f"a {self.kind} request takes {'messages' if chat else 'a prompt'} only"
            )
        if reserved := _RESERVED_PARAMS & set(self.params):
            raise InputError(f"LLM request params may not set {sorted(reserved)}")

    @classmethod
    def chat(cls, messages: list[dict[str, Any]], **params: Any) -> LLMRequest:
        return cls("chat", messages=list(messages), params=params)

    @classmethod
    def completion(cls, prompt: str | list[int], **params: Any) -> LLMRequest:
        return cls("completion", prompt=prompt, params=params)

    def payload(self, endpoint: Endpoint) -> dict[str, Any]:
        """The request as keyed and recorded: what is sent, plus where to. Unset (None) params
        are dropped so that leaving a parameter out and passing None are the same request."""
        body = {"messages": self.messages} if self.kind == "chat" else {"prompt": self.prompt}
        return {
            "kind": self.kind,
            "base_url": recorded_url(endpoint.base_url) if endpoint.base_url else None,
            "model": endpoint.model,
            **body,
            "params": {k: v for k, v in self.params.items() if v is not None},
        }


@dataclass(frozen=True)
class CallResult:
    """What one request gave. `call_id` is the request hash, so it is the same on every rerun.

    Logprobs come one per choice: for chat a list of `TokenLogprob`, for completions a
    `CompletionLogprobs`. Tokens are the reply's usage (also for cache hits); `cost_usd` is what
    this call spent: 0.0 for a cache hit or a failure on a priced endpoint, None when unpriced.
    `latency_s` runs from the request to its result, retries and waits included.
    """

    call_id: str
    request_hash: str
    kind: Kind
    model: str
    endpoint: str | None
    request: dict[str, Any]
    texts: list[str]
    finish_reasons: list[str | None]
    logprobs: list[Logprobs | None]
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    latency_s: float
    status: Status
    attempts: int
    error: str | None

    @property
    def text(self) -> str | None:
        """The first choice's text (None for a failed call)."""
        return self.texts[0] if self.texts else None

    @property
    def ok(self) -> bool:
        return self.status != "error"

    @property
    def cached(self) -> bool:
        return self.status == "cached"
