"""The retry policy: which failures are worth another attempt, and how long to wait first.

Retried: 429, 5xx, 408, 409, timeouts, dropped connections and garbled bodies, honouring the
server's `Retry-After` (cut to MAX_RETRY_AFTER_S); every other 4xx fails at once. Waits grow
exponentially from the endpoint's `backoff_base_s`, capped at `backoff_cap_s`, with ±jitter so
that calls which failed together do not retry together.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import openai

from autointerp.llm.endpoint import Endpoint
from autointerp.llm.responses import InvalidResponse

MAX_RETRY_AFTER_S = 120.0  # a longer server-requested wait is cut to this (as openai's client)


class Attempt(Exception):
    """A failed attempt, classified: whether to retry, and the wait the server asked for."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds); None if absent or a date."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return min(value, MAX_RETRY_AFTER_S)
    return None


def classify(err: Exception, timeout_s: float) -> Attempt:
    if isinstance(err, InvalidResponse):
        return Attempt(f"invalid reply: {err}", retryable=err.retryable)
    if isinstance(err, openai.APITimeoutError | TimeoutError):
        return Attempt(f"timed out after {timeout_s:g} s", retryable=True)
    if isinstance(err, openai.APIConnectionError):
        return Attempt(f"connection error: {err.__cause__ or err}", retryable=True)
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        return Attempt(
            f"HTTP {status}: {re.sub(r'^Error code: [0-9]+ - ', '', err.message)}",
            retryable=status in (408, 409, 429) or status >= 500,
            retry_after=retry_after(err.response.headers),
        )
    return Attempt(f"{type(err).__name__}: {err}", retryable=False)


def backoff(endpoint: Endpoint, attempt: int, rng: random.Random) -> float:
    """The wait before attempt `attempt + 1`."""
    delay = min(endpoint.backoff_base_s * 2 ** (attempt - 1), endpoint.backoff_cap_s)
    jitter = endpoint.backoff_jitter
    return delay * rng.uniform(1 - jitter, 1 + jitter)


def refused(err: Exception) -> bool:
    """Whether the endpoint refused the connection: nothing listens there."""
    if not isinstance(err, openai.APIConnectionError) or isinstance(err, openai.APITimeoutError):
        return False
    cause = err.__cause__
    return type(cause).__name__ == "ConnectError" or "refused" in str(cause).lower()


def attempt_cost(endpoint: Endpoint, err: Exception, body: str | None) -> float | None:
    """What a failed attempt cost: the usage its reply reported (a garbled or refused reply may
    still have been computed and billed), 0 without one, None when unknown (a timeout: the
    server may have computed the whole reply)."""
    if isinstance(err, openai.APITimeoutError | TimeoutError):
        return None
    if isinstance(err, openai.APIStatusError):
        body = err.response.text
    try:
        usage = json.loads(body or "").get("usage") or {}
    except (ValueError, AttributeError):
        return 0.0
    counts = [usage.get(name) for name in ("prompt_tokens", "completion_tokens")]
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return 0.0
    return endpoint.cost(*counts) or 0.0
