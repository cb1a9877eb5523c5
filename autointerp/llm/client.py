"""The one LLM client every stage uses: any OpenAI-compatible endpoint, cached, retried, accounted.

- Bounded concurrency: at most `Endpoint.max_concurrency` calls in flight per event loop (a batch
  run by `run_all` is one loop).
- Retries are ours (the `openai` client's are off), by the policy of `retry.py`. A call that
  still fails returns a `CallResult` with status "error" instead of raising, so a batch records
  per-item errors and carries on.
- A persistent content-addressed cache (`cache.py`): a repeated request costs no call, in this run,
  a later one or another process; identical requests in flight at once are sent only once.
- The API key is read from the environment variable the endpoint names, only when a call must go
  out, and is kept in the `openai` client alone: it is in no dataclass, cache key, cache file,
  result, table or error text (errors are scrubbed, `secrets.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
from tqdm.auto import tqdm

from autointerp.errors import InputError, error_kind
from autointerp.llm.cache import ResponseCache, ResponseStore, request_hash
from autointerp.llm.endpoint import Endpoint, recorded_url
from autointerp.llm.requests import CallResult, LLMRequest, Status
from autointerp.llm.responses import InvalidResponse, ParsedResponse, parse_response
from autointerp.llm.retry import attempt_cost, backoff, classify, refused
from autointerp.llm.secrets import scrub, scrub_body
from autointerp.progress import ProgressLog

log = logging.getLogger(__name__)


# Refused connections, before any call of a batch got through, that stop the batch: nothing
# listens at the endpoint, and retrying every call would only make the user wait.
REFUSALS_TO_STOP = 3


class EndpointUnreachable(InputError):
    """Nothing answers at an endpoint: a batch stops at once rather than retry every call."""


class _Session:
    """What belongs to one event loop: the HTTP client, the concurrency bound, calls in flight,
    and whether the endpoint has answered yet."""

    def __init__(self, client: openai.AsyncOpenAI, max_concurrency: int) -> None:
        self.client = client
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.inflight: dict[str, asyncio.Future[CallResult]] = {}
        self.answered = False
        self.refusals = 0


class LLMClient:
    """Calls one endpoint. Async at its core (`request`, `chat`, `completion`, `gather`); `run_all`
    runs a batch from synchronous code. Safe to share between threads (each thread's event loop
    gets its own HTTP client and concurrency bound).

    `cache_dir`: folder of the persistent response cache (the project uses
    $AUTOINTERP_HOME/llm_cache); or `cache`, another store (the shared cache); neither caches
    nothing. `report`: where each batch logs its progress (calls done, in flight, retried with
    the reason, elapsed, time left) every `report_every_s` seconds, also while no call
    finishes; None reports nothing. `sleep` and `seed` exist for tests: the backoff wait
    function and the jitter's random seed.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        cache_dir: str | Path | None = None,
        *,
        cache: ResponseStore | None = None,
        report: Callable[[str], None] | None = None,
        report_every_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        self.endpoint = endpoint
        if cache is not None and cache_dir is not None:
            raise ValueError("give cache_dir or cache, not both")
        self.cache = (
            cache
            if cache is not None
            else (ResponseCache(cache_dir) if cache_dir is not None else None)
        )
        self._owns_cache = True  # False in a client that borrows another's (with_attempts)
        # Calls a borrowing client (a stage's probe) paid for this one: the stage reads them from
        # the cache, and its audit must show them paid, not cached. `_paid_for`: where this
        # client, when it borrows, records the calls it paid.
        self._paid_by_borrower: dict[str, CallResult] = {}
        self._paid_for: dict[str, CallResult] | None = None
        self._report, self._report_every_s = report, report_every_s
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._activity_lock = threading.Lock()
        self._in_flight = 0
        self._retried: Counter[str] = Counter()
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Session] = (
            weakref.WeakKeyDictionary()
        )
        self._sessions_lock = threading.Lock()

    def check_serves(self, model: str | None, base_url: str | None) -> None:
        """Refuse to serve a profile of another endpoint: its output would be written under the
        profile's name and hash."""
        endpoint = self.endpoint
        if endpoint.model != model or (endpoint.base_url or None) != (base_url or None):
            raise InputError(
                f"the client calls {endpoint.model!r} at {endpoint.shown}, but the profile names "
                f"{model!r} at {recorded_url(base_url) if base_url else 'OpenAI'}: build the "
                "client from profile.endpoint()"
            )

    def with_attempts(self, max_attempts: int) -> LLMClient:
        """A client of the same endpoint, cache and backoff that tries each call at most
        `max_attempts` times. It borrows this client's cache: closing it leaves the cache open."""
        once = LLMClient(
            replace(self.endpoint, max_attempts=min(max_attempts, self.endpoint.max_attempts)),
            cache=self.cache,
            sleep=self._sleep,
        )
        once._owns_cache = False
        once._paid_for = self._paid_by_borrower
        return once

    def activity(self) -> str:
        """Calls in flight now and attempts retried so far, by reason: "2 calls in flight, 3
        retried (HTTP 500: 2; timed out after 300 s: 1)"."""
        with self._activity_lock:
            in_flight, retried = self._in_flight, self._retried.most_common()
        text = f"{in_flight} call{'s' * (in_flight != 1)} in flight"
        if retried:
            reasons = "; ".join(f"{reason}: {n}" for reason, n in retried)
            text += f", {sum(n for _, n in retried)} retried ({reasons})"
        return text

    def _count(self, in_flight: int = 0, retried: str | None = None) -> None:
        with self._activity_lock:
            self._in_flight += in_flight
            if retried is not None:
                self._retried[retried] += 1

    def __repr__(self) -> str:
        cache = self.cache.location if self.cache is not None else None
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
        stale = False  # a stored body that today's parser rejects: replaced by the next one
        if self.cache is not None:
            # The probe's reply is in the cache too: handed back as it is, not read again.
            paid = self._paid_by_borrower.pop(key, None)
            if paid is not None:
                return paid
            # Cache I/O runs off the event loop: a slow disk never stalls the calls in flight.
            body = await asyncio.to_thread(self.cache.get, key)
            if body is not None:
                try:
                    parsed = parse_response(request.kind, body)
                except InvalidResponse:
                    stale = True
                else:
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
            result = await self._call(session, request, payload, key, started, stale=stale)
        except BaseException:
            future.cancel()  # waiters on the same request are cancelled with it
            raise
        finally:
            del session.inflight[key]
        future.set_result(result)
        if self._paid_for is not None and result.ok and not result.cached:
            self._paid_for[key] = result
        return result

    async def gather(
        self,
        requests: Iterable[LLMRequest],
        *,
        progress: bool = False,
        on_result: Callable[[int, CallResult], None] | None = None,
        keep_logprobs: bool = True,
        label: str | None = None,
    ) -> list[CallResult]:
        """Run requests concurrently (within the endpoint's bound); results in request order.

        `progress` shows a tqdm bar with calls, cache hits, errors and spend; `on_result(index,
        result)` is called as each finishes; `label` names the batch in the client's reports.
        With `keep_logprobs=False` the results returned hold no logprobs: a caller that reads
        them in `on_result` as each result arrives keeps memory to what its tables need (every
        token's top logprobs dwarf the rest of a call).
        """
        requests = list(requests)
        results: list[CallResult | None] = [None] * len(requests)
        todo = iter(enumerate(requests))
        tally = {"cached": 0, "errors": 0, "usd": 0.0}
        bar = tqdm(total=len(requests), desc=f"LLM {self.endpoint.model}", disable=not progress)
        report = contextlib.nullcontext()
        if self._report is not None and requests:
            name = f"{label or 'calls'} ({self.endpoint.model} at {self.endpoint.shown})"
            report = ProgressLog(
                self._report, name, "calls", self._report_every_s, detail=self.activity
            )
            report(0, len(requests))
        finished = 0

        async def worker() -> None:
            # Workers draw from one iterator, so a batch of millions holds only a few tasks.
            for index, request in todo:
                result = await self.request(request)
                tally["cached"] += result.cached
                tally["errors"] += not result.ok
                tally["usd"] += result.cost_usd or 0.0
                bar.update()
                if progress:
                    bar.set_postfix(tally, refresh=False)
                if isinstance(report, ProgressLog):
                    nonlocal finished
                    finished += 1
                    report(finished, len(requests))
                if on_result is not None:
                    on_result(index, result)
                if not keep_logprobs:
                    result = replace(result, logprobs=[None] * len(result.logprobs))
                results[index] = result

        try:
            with report:
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
        keep_logprobs: bool = True,
        label: str | None = None,
    ) -> list[CallResult]:
        """`gather` from synchronous code: results in request order, failures as error results."""

        async def batch() -> list[CallResult]:
            try:
                return await self.gather(
                    requests,
                    progress=progress,
                    on_result=on_result,
                    keep_logprobs=keep_logprobs,
                    label=label,
                )
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
        """Close the cache (unless borrowed). HTTP connections are closed by `run_all` /
        `aclose`."""
        if self.cache is not None and self._owns_cache:
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

    async def _call(
        self,
        session: _Session,
        request: LLMRequest,
        payload: dict[str, Any],
        key: str,
        started: float,
        *,
        stale: bool = False,
    ) -> CallResult:
        async with session.semaphore:  # held through backoff: a throttled batch slows down whole
            self._count(in_flight=1)
            try:
                return await self._attempts(session, request, payload, key, started, stale)
            finally:
                self._count(in_flight=-1)

    async def _attempts(
        self,
        session: _Session,
        request: LLMRequest,
        payload: dict[str, Any],
        key: str,
        started: float,
        stale: bool,
    ) -> CallResult:
        endpoint = self.endpoint
        attempt = 0
        failed_cost: float | None = 0.0  # what failed attempts cost; None once unknown
        while True:
            attempt += 1
            body: str | None = None
            try:
                async with asyncio.timeout(endpoint.timeout_s):
                    body = scrub_body(
                        await self._send(session.client, payload), session.client.api_key
                    )
                parsed = parse_response(request.kind, body)
            except (openai.OpenAIError, InvalidResponse, TimeoutError) as err:
                failure = classify(err, endpoint.timeout_s)
                spent = attempt_cost(endpoint, err, body)
                failed_cost = None if spent is None or failed_cost is None else failed_cost + spent
                session.refusals += refused(err)
                if not session.answered and session.refusals >= REFUSALS_TO_STOP:
                    raise EndpointUnreachable(
                        f"nothing answers at {endpoint.shown} (connection refused "
                        f"{session.refusals} times): start the server, or set the profile's "
                        "base_url to where it listens"
                    ) from None
            else:
                session.answered = True
                if self.cache is not None:
                    await asyncio.to_thread(self.cache.put, key, payload, body, replace=stale)
                return self._result(
                    key,
                    payload,
                    started,
                    status="ok",
                    parsed=parsed,
                    attempts=attempt,
                    failed_cost=failed_cost,
                )
            message = scrub(str(failure), session.client.api_key)
            if not failure.retryable or attempt == endpoint.max_attempts:
                if failure.retryable:
                    message += f" (gave up after {attempt} attempts)"
                return self._result(
                    key,
                    payload,
                    started,
                    status="error",
                    attempts=attempt,
                    error=message,
                    failed_cost=failed_cost,
                )
            delay = (
                failure.retry_after
                if failure.retry_after is not None
                else backoff(endpoint, attempt, self._rng)
            )
            # Said where a person sees it: a retry may be minutes of waiting on a slow server.
            self._count(retried=error_kind(message))
            log.warning(
                "%s call %s: attempt %d of %d failed (%s); retrying in %.1f s",
                endpoint.shown,
                key[:12],
                attempt,
                endpoint.max_attempts,
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
        failed_cost: float | None = 0.0,
    ) -> CallResult:
        endpoint = self.endpoint
        if status == "ok" and parsed is not None:
            cost = endpoint.cost(parsed.prompt_tokens, parsed.completion_tokens)
        else:
            cost = 0.0 if endpoint.priced else None
        # Failed attempts that were billed count too; a timed-out one makes the total unknown.
        cost = None if cost is None or failed_cost is None else cost + failed_cost
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
