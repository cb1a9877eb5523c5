"""A scripted OpenAI-compatible HTTP server, for the tests and benchmarks of code that calls LLMs.

    with LLMServer(handler) as server:
        endpoint = Endpoint(model="m", base_url=server.url, api_key_env=None)
        server.inject(rate_limited(retry_after=2), server_error(), slow(5), dropped())

- `POST /v1/chat/completions` and `POST /v1/completions` answer in OpenAI's JSON shapes, with
  `usage`, chat `logprobs.content[*].top_logprobs`, and completions `logprobs` (`tokens`,
  `token_logprobs`, `top_logprobs`, `text_offset`; with `echo=True` the prompt's tokens come first,
  the very first without a logprob, as OpenAI's did).
- The test's `handler(received) -> Answer | Reply | str` scripts the answers (a str is the text of
  every choice); it can return a `Reply` to inject faults by rule. Faults queued with `inject` are
  served first, one per request, in order.
- Every request is recorded (`requests`: path, JSON body, headers), with `count(path)` and the
  highest number of requests in flight at once (`max_in_flight`).
- Text is split into tokens by `tokenize` (words, punctuation, each whitespace character), which is
  also what `usage` counts.
- Binds 127.0.0.1 on a free port, in a thread; leaving the `with` block closes every connection and
  wakes every delayed reply, so it stops at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from autointerp.simulate.simulator_prompt import CHAT_SYSTEM_MESSAGE

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_TOKEN_RE = re.compile(r"\w+|[^\w\s]|\s")


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


@dataclass
class Tok:
    """A token with its logprob and alternatives (default: just itself). None writes null."""

    token: str
    logprob: float | None = -0.1
    top: dict[str, float | None] | None = None

    def alternatives(self) -> dict[str, float | None]:
        return self.top if self.top is not None else {self.token: self.logprob}


@dataclass
class Answer:
    """A successful reply: one entry per choice, a text (tokenized) or explicit tokens."""

    choices: list[str | list[Tok]]
    echo_tokens: list[Tok] | None = None  # completions, echo=True: the prompt's tokens
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None  # default: tokens counted with `tokenize`
    logprobs: bool = True  # False: a server that ignores a request for logprobs


@dataclass
class Reply:
    """A raw reply, for faults. `status` None: after `delay_s`, answer as the handler says."""

    status: int | None = None
    body: bytes | str | dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long first (cut short when the server stops)
    drop: bool = False  # close the connection without answering


def rate_limited(retry_after: float | None = None) -> Reply:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return Reply(429, _error_body("Rate limit reached", "rate_limit_exceeded"), headers)


def server_error(status: int = 500) -> Reply:
    return Reply(status, _error_body("The server had an error", "server_error"))


def http_error(status: int, message: str = "Bad request") -> Reply:
    return Reply(status, _error_body(message, "invalid_request_error"))


def slow(seconds: float) -> Reply:
    return Reply(delay_s=seconds)


def dropped() -> Reply:
    return Reply(drop=True)


def malformed_json() -> Reply:
    return Reply(200, b'{"id": "x", "choices": [{"index": 0, "mess')


def empty_choices() -> Reply:
    return Reply(200, {"id": "x", "object": "chat.completion", "choices": [], "usage": None})


def null_content() -> Reply:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": None},
        "finish_reason": "stop",
    }
    return Reply(200, {"id": "x", "object": "chat.completion", "choices": [choice]})


def _error_body(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


@dataclass
class Received:
    path: str
    body: Any  # parsed JSON; None when the body was not JSON
    headers: dict[str, str]

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


Handler = Callable[[Received], "Answer | Reply | str"]


def default_handler(received: Received) -> str:
    """Chat: 'reply: ' + the last message; completions: ' ok'."""
    if received.path == CHAT_PATH:
        return "reply: " + str(received.body["messages"][-1].get("content", ""))
    return " ok"


def _toks(choice: str | list[Tok]) -> list[Tok]:
    return [Tok(t) for t in tokenize(choice)] if isinstance(choice, str) else choice


def _chat_body(request: dict, answer: Answer) -> dict:
    want = bool(request.get("logprobs")) and answer.logprobs
    k = request.get("top_logprobs") or 0
    choices, generated = [], 0
    for index, choice in enumerate(answer.choices):
        toks = _toks(choice)
        generated += len(toks)
        logprobs = None
        if want:
            logprobs = {
                "content": [
                    {
                        "token": t.token,
                        "logprob": t.logprob,
                        "bytes": list(t.token.encode()),
                        "top_logprobs": [
                            {"token": a, "logprob": lp, "bytes": list(a.encode())}
                            for a, lp in list(t.alternatives().items())[:k]
                        ],
                    }
                    for t in toks
                ]
            }
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": "".join(t.token for t in toks)},
                "logprobs": logprobs,
                "finish_reason": answer.finish_reason,
            }
        )
    prompt = sum(len(tokenize(str(m.get("content", "")))) for m in request["messages"])
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model"),
        "choices": choices,
        "usage": answer.usage or _usage(prompt, generated),
    }


def _completion_body(request: dict, answer: Answer) -> dict:
    prompt = request["prompt"]
    echo = bool(request.get("echo"))
    k = request.get("logprobs")  # None: no logprobs; an int: that many alternatives
    prompt_toks = answer.echo_tokens or [
        Tok(t, None if i == 0 else -1.0, None if i == 0 else {t: -1.0})
        for i, t in enumerate(tokenize(prompt))
    ]
    choices, generated = [], 0
    for index, choice in enumerate(answer.choices):
        gen = _toks(choice)
        limit = request.get("max_tokens")
        cut = limit is not None and len(gen) > limit
        gen = gen[:limit] if limit is not None else gen
        generated += len(gen)
        toks = (prompt_toks if echo else []) + gen
        logprobs = None
        if k is not None:
            offsets, at = [], 0
            for t in toks:
                offsets.append(at)
                at += len(t.token)
            logprobs = {
                "tokens": [t.token for t in toks],
                "token_logprobs": [t.logprob for t in toks],
                "top_logprobs": [
                    None
                    if t.top is None and t.logprob is None
                    else dict(list(t.alternatives().items())[:k])
                    for t in toks
                ],
                "text_offset": offsets,
            }
        choices.append(
            {
                "index": index,
                "text": "".join(t.token for t in toks),
                "logprobs": logprobs,
                "finish_reason": "length" if cut or not gen else answer.finish_reason,
            }
        )
    return {
        "id": "cmpl-test",
        "object": "text_completion",
        "created": 0,
        "model": request.get("model"),
        "choices": choices,
        "usage": answer.usage or _usage(len(prompt_toks), generated),
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class LLMServer:
    def __init__(self, handler: Handler = default_handler, *, latency_s: float = 0.0) -> None:
        self.handler = handler
        self.latency_s = latency_s  # added to every request, e.g. 0.2 for a throughput benchmark
        self.requests: list[Received] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[tuple[str | None, Reply]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def inject(self, *replies: Reply, path: str | None = None) -> None:
        """Queue faults for the next requests (to `path` only, when given), one per request."""
        with self._lock:
            self._faults.extend((path, r) for r in replies)

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(path is None or r.path == path for r in self.requests)

    def __enter__(self) -> LLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            for conn in self._connections:  # idle keep-alive connections would block the join
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()  # joins the handler threads
        self._thread.join()

    # -- called from handler threads ---------------------------------------------------------

    def _next_fault(self, path: str) -> Reply | None:
        with self._lock:
            for i, (only, reply) in enumerate(self._faults):
                if only is None or only == path:
                    del self._faults[i]
                    return reply
        return None

    def _answer(self, received: Received) -> Reply:
        """The reply to a request: a queued fault, else what the handler says."""
        reply = self._next_fault(received.path)
        if reply is not None and (reply.status is not None or reply.drop):
            return reply
        delay = reply.delay_s if reply else 0.0
        outcome = self.handler(received)
        if isinstance(outcome, Reply):
            return Reply(
                outcome.status, outcome.body, outcome.headers, delay + outcome.delay_s, outcome.drop
            )
        request = received.body
        if isinstance(outcome, str):
            outcome = Answer([outcome] * (request.get("n") or 1))
        build = _chat_body if received.path == CHAT_PATH else _completion_body
        return Reply(200, build(request, outcome), delay_s=delay)


class _Server(ThreadingHTTPServer):
    # Many clients connect at once in the concurrency benchmark: the default backlog of 5 drops
    # connection attempts, which the client then retries a second later.
    request_queue_size = 256


def _make_handler(owner: LLMServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        # Headers and body are written separately: without TCP_NODELAY each reply waits ~40 ms.
        disable_nagle_algorithm = True

        protocol_version = "HTTP/1.1"  # keep-alive, as real servers and the openai client use

        def setup(self) -> None:
            super().setup()
            with owner._lock:
                owner._connections.add(self.connection)

        def finish(self) -> None:
            with owner._lock:
                owner._connections.discard(self.connection)
            with contextlib.suppress(OSError):  # the client may have gone away first
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the default writes every request to stderr."""

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            path = self.path.split("?")[0].rstrip("/")
            received = Received(path, body, {k.lower(): v for k, v in self.headers.items()})
            with owner._lock:
                owner.requests.append(received)
                owner._in_flight += 1
                owner.max_in_flight = max(owner.max_in_flight, owner._in_flight)
            try:
                if path not in (CHAT_PATH, COMPLETIONS_PATH):
                    reply = http_error(404, f"no route {path}")
                elif body is None:
                    reply = http_error(400, "body is not JSON")
                else:
                    reply = owner._answer(received)
                wait = owner.latency_s + reply.delay_s
                if reply.drop or (wait and owner._stopping.wait(wait)):
                    self.close_connection = True  # answer nothing; the socket closes
                    return
                self._send(reply)
            finally:
                with owner._lock:
                    owner._in_flight -= 1

        def _send(self, reply: Reply) -> None:
            body = reply.body
            if isinstance(body, dict):
                body = json.dumps(body)
            data = body.encode() if isinstance(body, str) else body or b""
            try:
                self.send_response(reply.status or 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client timed out and left

    return _Handler


async def no_sleep(_: float) -> None:
    """A backoff wait that does not wait: retries in tests and benchmarks run at once."""


# --- a scripted simulator -----------------------------------------------------------------------


def target_tokens(content: str) -> list[str]:
    """The target tokens of a chat simulator question."""
    return content.split("\nTokens:\n", 1)[1].split("\n")


def explained_word(content: str) -> str:
    """The word of an explanation written as "the word X"."""
    return re.search(r"does is find the word (\w+)", content)[1]


def chat_simulator_handler(
    unreadable: int | None = None, failing: int | None = None
) -> Callable[[Received], Answer | Reply | str]:
    """token<TAB>number lines: 8 on the explained word (p = 0.75, else 0), 1 elsewhere; for the
    excerpt `unreadable` a reply with no such line, for `failing` HTTP 500."""

    def handler(received: Received) -> Reply:
        content = received.body["messages"][-1]["content"]
        assert received.body["messages"][0]["content"] == CHAT_SYSTEM_MESSAGE
        tokens, word = target_tokens(content), explained_word(content)
        if tokens[0] == f" x{unreadable}":
            return "I cannot predict that."
        if tokens[0] == f" x{failing}":
            return server_error(500)
        reply: list[Tok] = []
        for i, token in enumerate(tokens):
            value = "8" if token.strip() == word else "1"
            top = {value: math.log(0.75), "0": math.log(0.25), "x": -0.01}
            reply += [Tok(token), Tok("\t"), Tok(value, math.log(0.75), top)]
            if i < len(tokens) - 1:
                reply.append(Tok("\n"))
        return Answer([reply])

    return handler
