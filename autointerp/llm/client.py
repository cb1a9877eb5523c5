"""The one LLM client every stage uses: any OpenAI-compatible endpoint, cached, retried, accounted.

- Bounded concurrency: at most `Endpoint.max_concurrency` calls in flight per event loop (a batch
  run by `run_all` is one loop).
- Retries are ours (the `openai` client's are off): exponential backoff with jitter on 429, 5xx,
  408, 409, timeouts, dropped connections and garbled bodies, honouring `Retry-After`; other 4xx
  fail at once. A call that still fails returns a `CallResult` with status "error" instead of
  raising, so a batch records per-item errors and carries on.
- A persistent content-addressed cache (`cache.py`): a repeated request costs no call, in this run,
  a later one or another process; identical requests in flight at once are sent only once.
- The API key is read from the environment variable the endpoint names, only when a call must go
  out, and is kept in the `openai` client alone: it is in no dataclass, cache key, cache file,
  result, table or error text (errors are scrubbed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import httpx2
import openai
from tqdm.auto import tqdm

from autointerp.errors import ConfigError, InputError
from autointerp.llm.cache import ResponseCache, request_hash
from autointerp.llm.responses import (
    InvalidResponse,
    Kind,
    Logprobs,
    ParsedResponse,
    parse_response,
)

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
MAX_RETRY_AFTER_S = (
    120.0  # a longer server-requested wait is cut to this (as the openai client does)
)
NO_KEY = "no-key"  # local servers ignore the key, but the openai client insists on one
Status = Literal["ok", "cached", "error"]
# Parameters the client owns: the model and payload come from the endpoint and request, and
# streamed replies are not parsed.
_RESERVED_PARAMS = frozenset({"model", "messages", "prompt", "stream"})


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible model endpoint and how to call it. Holds the NAME of the key's variable.

    `base_url` None is OpenAI; a local vLLM / llama.cpp / Ollama server is e.g.
    "http://127.0.0.1:8000/v1" with `api_key_env=None` (it needs no key). Only `base_url` and
    `model` enter the cache key; timeouts, retries, concurrency and prices do not.
    """

    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 60.0  # per attempt
    max_concurrency: int = 10
    max_attempts: int = 10
    backoff_base_s: float = 1.0  # first retry waits this, doubling each time
    backoff_cap_s: float = 10.0
    backoff_jitter: float = 0.2  # ±20%: spreads retries of calls that failed together
    prompt_price_per_m: float | None = None  # USD per 1M prompt tokens
    completion_price_per_m: float | None = None  # USD per 1M completion tokens

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("an LLM endpoint needs a model name")
        if self.timeout_s <= 0 or self.max_concurrency < 1 or self.max_attempts < 1:
            raise ConfigError(
                f"endpoint {self.model!r}: timeout_s must be > 0, max_concurrency and "
                "max_attempts >= 1"
            )
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0 or not 0 <= self.backoff_jitter < 1:
            raise ConfigError(
                f"endpoint {self.model!r}: backoff times must be >= 0 and jitter in [0, 1)"
            )

    @property
    def url(self) -> str:
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    @property
    def priced(self) -> bool:
        return self.prompt_price_per_m is not None and self.completion_price_per_m is not None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """USD for a call of these token counts; None without prices or counts."""
        if not self.priced or prompt_tokens is None or completion_tokens is None:
            return None
        return (
            prompt_tokens * self.prompt_price_per_m
            + completion_tokens * self.completion_price_per_m
        ) / 1e6

    def api_key(self) -> str:
        """The key, read from the environment now; never stored on the endpoint."""
        if self.api_key_env is None:
            return NO_KEY
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"no API key for {self.url}: set the environment variable {self.api_key_env}, "
                "or set api_key_env to None for a local server that needs no key"
            )
        return key


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
            "base_url": endpoint.base_url.rstrip("/") if endpoint.base_url else None,
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


class _Attempt(Exception):
    """A failed attempt, classified: whether to retry, and the wait the server asked for."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds); None if absent or a date."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            value = float(headers.get(name)) * scale
        except (TypeError, ValueError):
            continue
        if value >= 0:
            return min(value, MAX_RETRY_AFTER_S)
    return None


def _classify(err: Exception, timeout_s: float) -> _Attempt:
    if isinstance(err, InvalidResponse):
        return _Attempt(f"invalid reply: {err}", retryable=err.retryable)
    if isinstance(err, openai.APITimeoutError | TimeoutError):
        return _Attempt(f"timed out after {timeout_s:g} s", retryable=True)
    if isinstance(err, openai.APIConnectionError):
        return _Attempt(f"connection error: {err.__cause__ or err}", retryable=True)
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        return _Attempt(
            f"HTTP {status}: {re.sub(r'^Error code: [0-9]+ - ', '', err.message)}",
            retryable=status in (408, 409, 429) or status >= 500,
            retry_after=_retry_after(err.response.headers),
        )
    return _Attempt(f"{type(err).__name__}: {err}", retryable=False)


_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)\S+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),  # OpenAI-style keys, should a server echo another
)


def _scrub(text: str, key: str) -> str:
    if key and key != NO_KEY:
        text = text.replace(key, "[api key]")
    text = _SECRET_PATTERNS[0].sub(r"\1[redacted]", text)
    return _SECRET_PATTERNS[1].sub("[redacted]", text)


class _Session:
    """What belongs to one event loop: the HTTP client, the concurrency bound, calls in flight."""

    def __init__(self, client: openai.AsyncOpenAI, max_concurrency: int) -> None:
        self.client = client
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.inflight: dict[str, asyncio.Future[CallResult]] = {}


class LLMClient:
    """Calls one endpoint. Async at its core (`request`, `chat`, `completion`, `gather`); `run_all`
    runs a batch from synchronous code. Safe to share between threads (each thread's event loop
    gets its own HTTP client and concurrency bound).

    `cache_dir`: folder of the persistent response cache (the project uses
    $AUTOINTERP_HOME/llm_cache); None caches nothing. `sleep` and `seed` exist for tests: the
    backoff wait function and the jitter's random seed.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        cache_dir: str | Path | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Session] = (
            weakref.WeakKeyDictionary()
        )
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:
        cache = self.cache.path if self.cache is not None else None
        return f"LLMClient({self.endpoint!r}, cache={cache})"

    # -- async API ---------------------------------------------------------------------------

    async def chat(self, messages: list[dict[str, Any]], **params: Any) -> CallResult:
        return await self.request(LLMRequest.chat(messages, **params))

    async def completion(self, prompt: str | list[int], **params: Any) -> CallResult:
        return await self.request(LLMRequest.completion(prompt, **params))

    async def request(self, request: LLMRequest) -> CallResult:
        payload = request.payload(self.endpoint)
        key = request_hash(payload)
        started = time.monotonic()
        if self.cache is not None and (body := self.cache.get(key)) is not None:
            # Only parseable bodies are stored; an unreadable one is simply asked again.
            with contextlib.suppress(InvalidResponse):
                parsed = parse_response(request.kind, body)
                return self._result(key, payload, started, status="cached", parsed=parsed)
        session = self._session()
        pending = session.inflight.get(key)
        if pending is not None:
            first = await asyncio.shield(pending)
            if not first.ok:
                return first
            cost = 0.0 if self.endpoint.priced else None
            return replace(
                first,
                status="cached",
                attempts=0,
                cost_usd=cost,
                latency_s=time.monotonic() - started,
            )
        future: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        session.inflight[key] = future
        try:
            result = await self._call(session, request, payload, key, started)
        except BaseException:
            future.cancel()  # waiters on the same request are cancelled with it
            raise
        finally:
            del session.inflight[key]
        future.set_result(result)
        return result

    async def gather(
        self,
        requests: Iterable[LLMRequest],
        *,
        progress: bool = False,
        on_result: Callable[[int, CallResult], None] | None = None,
    ) -> list[CallResult]:
        """Run requests concurrently (within the endpoint's bound); results in request order.

        `progress` shows a tqdm bar with calls, cache hits, errors and spend; `on_result(index,
        result)` is called as each finishes.
        """
        requests = list(requests)
        results: list[CallResult | None] = [None] * len(requests)
        todo = iter(enumerate(requests))
        tally = {"cached": 0, "errors": 0, "usd": 0.0}
        bar = tqdm(total=len(requests), desc=f"LLM {self.endpoint.model}", disable=not progress)

        async def worker() -> None:
            # Workers draw from one iterator, so a batch of millions holds only a few tasks.
            for index, request in todo:
                result = await self.request(request)
                results[index] = result
                tally["cached"] += result.cached
                tally["errors"] += not result.ok
                tally["usd"] += result.cost_usd or 0.0
                bar.update()
                if progress:
                    bar.set_postfix(tally, refresh=False)
                if on_result is not None:
                    on_result(index, result)

        try:
            workers = min(self.endpoint.max_concurrency, len(requests))
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            bar.close()
        return results  # type: ignore[return-value]  # every slot is filled once gather returns

    async def aclose(self) -> None:
        """Close this event loop's HTTP connections (the cache stays open)."""
        with self._sessions_lock:
            session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.client.close()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- sync API ----------------------------------------------------------------------------

    def run_all(
        self,
        requests: Iterable[LLMRequest],
        *,
        progress: bool = False,
        on_result: Callable[[int, CallResult], None] | None = None,
    ) -> list[CallResult]:
        """`gather` from synchronous code: results in request order, failures as error results."""

        async def batch() -> list[CallResult]:
            try:
                return await self.gather(requests, progress=progress, on_result=on_result)
            finally:
                await self.aclose()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(batch())
        # Called from inside a running loop (a notebook, an async asset): asyncio.run refuses
        # to nest, so the batch gets a thread and a loop of its own.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, batch()).result()

    def close(self) -> None:
        """Close the cache. HTTP connections are closed by `run_all` / `aclose`."""
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _session(self) -> _Session:
        loop = asyncio.get_running_loop()
        with self._sessions_lock:
            session = self._sessions.get(loop)
            if session is None:
                client = openai.AsyncOpenAI(
                    base_url=self.endpoint.url,
                    api_key=self.endpoint.api_key(),
                    max_retries=0,
                    timeout=self.endpoint.timeout_s,
                )
                session = self._sessions[loop] = _Session(client, self.endpoint.max_concurrency)
        return session

    async def _send(self, client: openai.AsyncOpenAI, payload: dict[str, Any]) -> str:
        # The body goes as built, through the client's generic POST: every param passes, server-
        # specific ones (vLLM's top_k, ...) included, and the typed endpoints' walk over the
        # messages (about 4 ms of CPU per long prompt, which caps throughput at high
        # concurrency) is skipped. Errors, auth and timeouts are the client's as for any call.
        # The raw body is kept because it is what the cache stores.
        if payload["kind"] == "chat":
            path, body = "/chat/completions", {"messages": payload["messages"]}
        else:
            path, body = "/completions", {"prompt": payload["prompt"]}
        response = await client.post(
            path,
            cast_to=httpx2.Response,
            body={"model": payload["model"], **body, **payload["params"]},
        )
        return response.text

    def _backoff(self, attempt: int) -> float:
        delay = min(self.endpoint.backoff_base_s * 2 ** (attempt - 1), self.endpoint.backoff_cap_s)
        jitter = self.endpoint.backoff_jitter
        return delay * self._rng.uniform(1 - jitter, 1 + jitter)

    async def _call(
        self,
        session: _Session,
        request: LLMRequest,
        payload: dict[str, Any],
        key: str,
        started: float,
    ) -> CallResult:
        endpoint = self.endpoint
        attempt = 0
        async with session.semaphore:  # held through backoff: a throttled batch slows down whole
            while True:
                attempt += 1
                try:
                    async with asyncio.timeout(endpoint.timeout_s):
                        body = await self._send(session.client, payload)
                    parsed = parse_response(request.kind, body)
                except (openai.OpenAIError, InvalidResponse, TimeoutError) as err:
                    failure = _classify(err, endpoint.timeout_s)
                else:
                    if self.cache is not None:
                        self.cache.put(key, payload, body)
                    return self._result(
                        key, payload, started, status="ok", parsed=parsed, attempts=attempt
                    )
                message = _scrub(str(failure), session.client.api_key)
                if not failure.retryable or attempt == endpoint.max_attempts:
                    if failure.retryable:
                        message += f" (gave up after {attempt} attempts)"
                    return self._result(
                        key, payload, started, status="error", attempts=attempt, error=message
                    )
                delay = (
                    failure.retry_after
                    if failure.retry_after is not None
                    else self._backoff(attempt)
                )
                log.debug(
                    "%s: attempt %d failed (%s); retrying in %.2f s",
                    key[:12],
                    attempt,
                    message,
                    delay,
                )
                await self._sleep(delay)

    def _result(
        self,
        key: str,
        payload: dict[str, Any],
        started: float,
        *,
        status: Status,
        parsed: ParsedResponse | None = None,
        attempts: int = 0,
        error: str | None = None,
    ) -> CallResult:
        endpoint = self.endpoint
        if status == "ok" and parsed is not None:
            cost = endpoint.cost(parsed.prompt_tokens, parsed.completion_tokens)
        else:
            cost = 0.0 if endpoint.priced else None
        return CallResult(
            call_id=key,
            request_hash=key,
            kind=payload["kind"],
            model=endpoint.model,
            endpoint=payload["base_url"],
            request=payload,
            texts=parsed.texts if parsed else [],
            finish_reasons=parsed.finish_reasons if parsed else [],
            logprobs=parsed.logprobs if parsed else [],
            prompt_tokens=parsed.prompt_tokens if parsed else None,
            completion_tokens=parsed.completion_tokens if parsed else None,
            cost_usd=cost,
            latency_s=time.monotonic() - started,
            status=status,
            attempts=attempts,
            error=error,
        )
