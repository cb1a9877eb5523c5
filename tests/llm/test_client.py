"""The shared LLM client against a scripted local OpenAI-compatible server (tests/llm_server.py).

No test looks at the clock: retries are counted in attempts and server requests, and backoff waits
are recorded by an injected sleep instead of slept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from autointerp.errors import ConfigError, InputError
from autointerp.llm.accounting import Usage, calls_frame
from autointerp.llm.client import REFUSALS_TO_STOP, EndpointUnreachable, LLMClient
from autointerp.llm.endpoint import Endpoint, recorded_url
from autointerp.llm.requests import LLMRequest
from autointerp.llm.responses import CompletionLogprobs, TokenLogprob
from autointerp.storage.schemas import CALLS_SCHEMA
from autointerp.testing.llm_server import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    Answer,
    LLMServer,
    Received,
    Reply,
    Tok,
    default_handler,
    dropped,
    empty_choices,
    http_error,
    malformed_json,
    null_content,
    rate_limited,
    server_error,
    slow,
)

KEY_ENV = "AUTOINTERP_TEST_LLM_KEY"
BASE = 0.01  # backoff base in tests; the waits are recorded, not slept


class RecordingSleep(list):
    """Stands in for asyncio.sleep: records each requested wait and yields once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def server():
    with LLMServer() as s:
        yield s


def make_client(
    server: LLMServer, cache_dir: Path | None = None, sleep: RecordingSleep | None = None, **kw
) -> LLMClient:
    settings = {
        "base_url": server.url,
        "api_key_env": None,
        "timeout_s": 2.0,
        "max_attempts": 4,
        "backoff_base_s": BASE,
        "backoff_cap_s": 4 * BASE,
    }
    settings.update(kw)
    return LLMClient(
        Endpoint("test-model", **settings),
        cache_dir,
        sleep=sleep if sleep is not None else RecordingSleep(),
        seed=0,
    )


def chat(content: str = "hello", **params) -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": content}], **params)


def refuse(content: str, status: int, otherwise: str | None = None):
    """A handler that answers `status` to one message, by rule (queued faults would race)."""

    def handler(received: Received):
        if received.body["messages"][0]["content"] == content:
            return http_error(status)
        return otherwise if otherwise is not None else default_handler(received)

    return handler


# -- responses -------------------------------------------------------------------------------


def test_chat_returns_text_logprobs_tokens_and_cost(server):
    server.handler = lambda r: Answer(
        [[Tok("the"), Tok("\t"), Tok("7", -0.2, {"7": -0.2, "6": -1.8, "x": -3.0}), Tok("\n")]]
    )
    client = make_client(server, prompt_price_per_m=2.0, completion_price_per_m=8.0)
    [result] = client.run_all([chat("a b c", logprobs=True, top_logprobs=2, max_tokens=20)])

    assert result.status == "ok" and result.attempts == 1 and result.error is None
    assert result.text == "the\t7\n"
    assert result.logprobs[0][2] == TokenLogprob("7", -0.2, [("7", -0.2), ("6", -1.8)])
    assert (result.prompt_tokens, result.completion_tokens) == (5, 4)  # "a", " ", "b", " ", "c"
    assert result.cost_usd == pytest.approx((5 * 2.0 + 4 * 8.0) / 1e6)
    sent = server.requests[0].body
    assert sent["model"] == "test-model"
    assert (sent["logprobs"], sent["top_logprobs"], sent["max_tokens"]) == (True, 2, 20)
    assert result.request["params"] == {"logprobs": True, "top_logprobs": 2, "max_tokens": 20}


def test_completion_echo_returns_prompt_logprobs(server):
    client = make_client(server)
    [result] = client.run_all(
        [LLMRequest.completion("cat\tunknown", max_tokens=0, echo=True, logprobs=5)]
    )

    assert server.requests[0].path == COMPLETIONS_PATH
    assert server.requests[0].body["echo"] is True
    assert result.text == "cat\tunknown"
    assert result.logprobs == [
        CompletionLogprobs(
            tokens=["cat", "\t", "unknown"],
            token_logprobs=[None, -1.0, -1.0],
            top_logprobs=[None, {"\t": -1.0}, {"unknown": -1.0}],
            text_offset=[0, 3, 4],
        )
    ]
    assert (result.prompt_tokens, result.completion_tokens) == (3, 0)


def test_several_choices(server):
    [result] = make_client(server).run_all([chat("hi", n=3)])
    assert result.texts == ["reply: hi"] * 3 and result.finish_reasons == ["stop"] * 3


def test_null_content_and_logprobs_without_numbers_parse(server):
    client = make_client(server)
    server.inject(null_content())
    [empty] = client.run_all([chat("a")])
    assert (empty.status, empty.text) == ("ok", "")

    server.handler = lambda r: Answer([[Tok("five", None, {"five": None, "5": "n/a"})]])
    [result] = client.run_all([chat("b", logprobs=True, top_logprobs=5)])
    assert result.logprobs[0] == [TokenLogprob("five", None, [("five", None), ("5", None)])]


# -- retries ---------------------------------------------------------------------------------


def test_429_honours_retry_after(server):
    sleep = RecordingSleep()
    client = make_client(server, sleep=sleep)
    server.inject(rate_limited(retry_after=7), rate_limited(retry_after=0.5))

    [result] = client.run_all([chat()])

    assert (result.status, result.attempts) == ("ok", 3)
    assert server.count(CHAT_PATH) == 3
    assert sleep == [7.0, 0.5]


@pytest.mark.parametrize(
    "fault",
    [
        rate_limited(),
        server_error(500),
        server_error(503),
        http_error(408),
        http_error(409),
        slow(5.0),  # longer than the client's timeout
        dropped(),
        malformed_json(),
    ],
    ids=["429", "500", "503", "408", "409", "timeout", "dropped", "malformed"],
)
def test_transient_failures_are_retried(server, fault):
    sleep = RecordingSleep()
    client = make_client(server, sleep=sleep, timeout_s=0.3)
    server.inject(fault)

    [result] = client.run_all([chat()])

    assert (result.status, result.attempts, result.text) == ("ok", 2, "reply: hello")
    assert server.count() == 2
    assert len(sleep) == 1 and BASE * 0.8 <= sleep[0] <= BASE * 1.2  # backoff ±20%


def test_backoff_doubles_caps_and_gives_up_with_an_error_result(server):
    sleep = RecordingSleep()
    client = make_client(server, sleep=sleep, max_attempts=6)
    server.handler = lambda r: server_error(502)

    [result] = client.run_all([chat()])

    assert result.status == "error" and result.attempts == 6 and server.count() == 6
    assert "HTTP 502" in result.error and "gave up after 6 attempts" in result.error
    assert result.texts == [] and result.prompt_tokens is None
    expected = [BASE, 2 * BASE, 4 * BASE, 4 * BASE, 4 * BASE]
    assert len(sleep) == 5
    assert all(0.8 * e <= s <= 1.2 * e for s, e in zip(sleep, expected, strict=True))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 415, 422])
def test_other_client_errors_are_not_retried(server, status):
    sleep = RecordingSleep()
    client = make_client(server, sleep=sleep)
    server.inject(http_error(status, "no such model"))

    [result] = client.run_all([chat()])

    assert (result.status, result.attempts, server.count(), sleep) == ("error", 1, 1, [])
    assert result.error == f"HTTP {status}: no such model"


def test_batch_carries_on_past_failed_calls(server):
    server.handler = refuse("bad", 400, otherwise="fine")
    results = make_client(server).run_all([chat("a"), chat("bad"), chat("c")])
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert [r.text for r in results] == ["fine", None, "fine"]


def test_empty_choices_is_an_error_that_is_neither_retried_nor_cached(server, tmp_path):
    client = make_client(server, tmp_path)
    server.inject(empty_choices())

    [first] = client.run_all([chat()])
    [second] = client.run_all([chat()])

    assert (first.status, first.attempts) == ("error", 1)
    assert "no choices" in first.error
    assert (second.status, server.count()) == ("ok", 2)


# -- cache -----------------------------------------------------------------------------------


def test_cache_hit_makes_no_request_and_keeps_the_call_id(server, tmp_path):
    client = make_client(server, tmp_path, prompt_price_per_m=1.0, completion_price_per_m=1.0)
    [first] = client.run_all([chat(temperature=0, max_tokens=5)])
    [again] = client.run_all([chat(temperature=0, max_tokens=5, top_p=None)])  # None = unset

    assert server.count() == 1
    assert (first.status, again.status, again.attempts, again.cached) == ("ok", "cached", 0, True)
    assert again.call_id == first.call_id == first.request_hash
    assert again.text == first.text and again.prompt_tokens == first.prompt_tokens
    assert first.cost_usd > 0 and again.cost_usd == 0.0

    client.run_all([chat(temperature=0.5, max_tokens=5)])  # another sampling param: another call
    assert server.count() == 2


def test_cache_is_shared_by_client_instances(server, tmp_path):
    [first] = make_client(server, tmp_path).run_all([chat("shared")])
    with make_client(server, tmp_path) as other:
        [second] = other.run_all([chat("shared")])
    assert server.count() == 1
    assert (second.status, second.call_id, second.text) == ("cached", first.call_id, first.text)


def test_cache_key_covers_model_and_endpoint(server, tmp_path):
    make_client(server, tmp_path).run_all([chat()])
    other_model = LLMClient(
        Endpoint("other-model", base_url=server.url, api_key_env=None), tmp_path
    )
    [result] = other_model.run_all([chat()])
    assert result.status == "ok" and server.count() == 2


_CHILD = """
import json, sys
from autointerp.llm import Endpoint, LLMClient, LLMRequest
url, cache, contents = sys.argv[1], sys.argv[2], sys.argv[3:]
client = LLMClient(Endpoint("test-model", base_url=url, api_key_env=None), cache)
requests = [LLMRequest.chat([{"role": "user", "content": c}]) for c in contents]
print(json.dumps([[r.status, r.call_id, r.text] for r in client.run_all(requests)]))
"""


def _child(server: LLMServer, cache: Path, *contents: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, server.url, str(cache), *contents],
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait(child: subprocess.Popen) -> list[list]:
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    return json.loads(out)


def test_cache_is_shared_across_processes(server, tmp_path):
    [(status, call_id, text)] = _wait(_child(server, tmp_path, "from a child"))
    assert status == "ok"

    [parent] = make_client(server, tmp_path).run_all(
        [chat("from a child"), chat("from the parent")]
    )[:1]
    assert (parent.status, parent.call_id, parent.text) == ("cached", call_id, text)

    [(status, _, _)] = _wait(_child(server, tmp_path, "from the parent"))
    assert status == "cached"
    assert server.count() == 2


def test_processes_writing_the_cache_at_once(server, tmp_path):
    contents = [f"request {i}" for i in range(6)]
    children = [_child(server, tmp_path, *contents) for _ in range(2)]
    outputs = [_wait(child) for child in children]

    assert all(status in ("ok", "cached") for out in outputs for status, _, _ in out)
    assert [(c, t) for _, c, t in outputs[0]] == [(c, t) for _, c, t in outputs[1]]
    assert 6 <= server.count() <= 12
    with make_client(server, tmp_path) as client:
        assert client.cache.count() == 6
        assert all(r.cached for r in client.run_all([chat(c) for c in contents]))


def test_identical_requests_in_flight_are_sent_once(server):
    client = make_client(server)

    async def burst():
        async with client:
            return await asyncio.gather(*(client.request(chat("same")) for _ in range(5)))

    results = asyncio.run(burst())
    assert server.count() == 1
    assert sorted(r.status for r in results) == ["cached"] * 4 + ["ok"]
    assert len({r.call_id for r in results}) == 1


# -- the API key -----------------------------------------------------------------------------


def test_api_key_is_sent_but_never_kept(server, tmp_path, monkeypatch):
    # One OpenAI-style key and one of another provider's shape (no "sk-" to recognise it by).
    keys = ["sk-test-" + secrets.token_hex(16), "other-" + secrets.token_hex(16)]
    # The server echoes the key in its errors, as careless servers do; the client must scrub it.
    server.handler = lambda r: (
        http_error(401, f"key {r.authorization} refused; raw {r.authorization.split()[-1]}")
        if r.body["messages"][0]["content"] == "denied"
        else "fine"
    )
    endpoint = Endpoint("test-model", base_url=server.url, api_key_env=KEY_ENV, max_attempts=2)
    results = []
    for key in keys:
        monkeypatch.setenv(KEY_ENV, key)
        client = LLMClient(endpoint, tmp_path)
        results += client.run_all([chat("same request"), chat("denied")])
        client.close()

    assert [a.authorization for a in server.requests] == [
        f"Bearer {keys[0]}",
        f"Bearer {keys[0]}",
        f"Bearer {keys[1]}",
    ]  # the second key's "same request" was a cache hit: one entry for both keys
    assert [r.status for r in results] == ["ok", "error", "cached", "error"]
    assert "HTTP 401" in results[1].error

    frame = calls_frame(results)
    written = [
        frame.write_json(),
        str(frame.rows()),
        repr(results),
        repr(endpoint),
        repr(client),
        *(r.error or "" for r in results),
    ]
    stored = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    for key in keys:
        secret = key.split("-")[-1]
        assert not any(secret in text for text in written)
        assert not any(secret.encode() in blob for blob in stored)


def test_missing_key_fails_clearly_but_cache_hits_need_none(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-" + secrets.token_hex(8))
    endpoint = Endpoint("test-model", base_url=server.url, api_key_env=KEY_ENV)
    LLMClient(endpoint, tmp_path).run_all([chat("cached")])

    monkeypatch.delenv(KEY_ENV)
    client = LLMClient(endpoint, tmp_path)
    [hit] = client.run_all([chat("cached")])
    assert hit.status == "cached"
    with pytest.raises(ConfigError, match=KEY_ENV):
        client.run_all([chat("not cached")])


# -- concurrency -----------------------------------------------------------------------------


def test_run_all_respects_the_concurrency_bound(tmp_path):
    with LLMServer(latency_s=0.1) as server:
        client = make_client(server, tmp_path, max_concurrency=3)
        results = client.run_all([chat(f"q{i}") for i in range(12)])
    assert [r.text for r in results] == [f"reply: q{i}" for i in range(12)]  # in order
    assert server.max_in_flight == 3


def test_concurrent_coroutines_respect_the_bound():
    with LLMServer(latency_s=0.05) as server:
        client = make_client(server, max_concurrency=2)

        async def many():
            async with client:
                return await asyncio.gather(*(client.request(chat(f"q{i}")) for i in range(8)))

        results = asyncio.run(many())
    assert all(r.ok for r in results) and server.count() == 8
    assert server.max_in_flight == 2


def test_one_client_shared_by_threads(server, tmp_path):
    client = make_client(server, tmp_path)
    results: dict[int, list] = {}

    def work(t: int) -> None:
        results[t] = client.run_all([chat(f"thread {t} q{i}") for i in range(4)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status == "ok" for rs in results.values() for r in rs)
    assert client.cache.count() == 8


def test_run_all_inside_a_running_event_loop(server):
    client = make_client(server)

    async def notebook_cell():
        return client.run_all([chat("nested")])

    [result] = asyncio.run(notebook_cell())
    assert result.text == "reply: nested"


def test_progress_callback_sees_every_result(server):
    seen = []
    make_client(server).run_all(
        [chat(f"q{i}") for i in range(5)],
        progress=True,
        on_result=lambda i, r: seen.append((i, r.status)),
    )
    assert sorted(seen) == [(i, "ok") for i in range(5)]


# -- accounting and the audit table ----------------------------------------------------------


def test_usage_totals(server, tmp_path):
    client = make_client(server, tmp_path, prompt_price_per_m=1.0, completion_price_per_m=3.0)
    server.handler = refuse("bad", 400)
    results = client.run_all([chat("bad"), chat("one"), chat("two")])
    results += client.run_all([chat("one")])

    usage = Usage.of(results)
    assert (usage.calls, usage.http_calls, usage.cached, usage.errors) == (4, 3, 1, 1)
    # "one"/"two": 1 prompt token and "reply: one" = 4 completion tokens each
    assert (usage.prompt_tokens, usage.completion_tokens) == (2, 8)
    assert usage.cost_usd == pytest.approx((2 * 1.0 + 8 * 3.0) / 1e6)
    assert Usage.of(make_client(server).run_all([chat("unpriced")])).cost_usd is None


def test_calls_frame(server, tmp_path):
    client = make_client(server, tmp_path)
    server.handler = refuse("lost", 404)
    results = client.run_all([chat("lost"), chat("found", n=2)])
    results += client.run_all([chat("found", n=2)])

    frame = calls_frame(results)
    assert frame.schema == pl.Schema(CALLS_SCHEMA)
    assert set(CALLS_SCHEMA) >= {
        "call_id",
        "request_hash",
        "model",
        "endpoint",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "latency_s",
        "status",
        "attempts",
        "error",
        "cached",
        "request_json",
        "response_texts",
    }
    assert frame["status"].to_list() == ["error", "ok", "cached"]
    assert frame["cached"].to_list() == [False, False, True]
    assert frame["attempts"].to_list() == [1, 1, 0]
    assert frame["model"].unique().to_list() == ["test-model"]
    assert frame["endpoint"].unique().to_list() == [server.url]
    assert frame["response_texts"].to_list()[1] == ["reply: found"] * 2
    assert frame["error"][0] == "HTTP 404: Bad request"
    request = json.loads(frame["request_json"][1])
    assert request["messages"] == [{"role": "user", "content": "found"}]
    assert request["params"] == {"n": 2}
    assert frame["call_id"][1] == frame["call_id"][2]
    assert calls_frame([]).schema == pl.Schema(CALLS_SCHEMA)


# -- validation ------------------------------------------------------------------------------


def test_bad_requests_and_endpoints_are_refused():
    with pytest.raises(InputError, match="stream"):
        LLMRequest.chat([{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(InputError):
        LLMRequest("chat", prompt="x")
    with pytest.raises(ConfigError):
        Endpoint("m", max_concurrency=0)
    with pytest.raises(ConfigError):
        Endpoint("")


# -- secrets, costs and a cache that fails ------------------------------------------------------


def test_api_key_env_must_name_a_variable_and_a_key_is_never_echoed():
    key = "sk-" + secrets.token_hex(20)
    with pytest.raises(ConfigError) as caught:
        Endpoint("m", api_key_env=key)
    assert key not in str(caught.value) and "NAME of an environment variable" in str(caught.value)
    Endpoint("m", api_key_env="MY_KEY_2")  # a name is fine


def test_credentials_and_query_strings_in_the_url_are_never_recorded(server, tmp_path):
    host = server.url.removeprefix("http://")
    client = LLMClient(
        Endpoint("m", base_url=f"http://user:hunter2@{host}", api_key_env=None), tmp_path, seed=0
    )
    [result] = client.run_all([chat()])
    recorded = json.dumps(result.request) + str(calls_frame([result]).to_dicts()) + repr(client)
    assert result.ok and "hunter2" not in recorded
    assert result.endpoint == f"http://{host}"
    client.close()
    assert b"hunter2" not in (tmp_path / "responses.sqlite").read_bytes()
    assert recorded_url("https://u:p@h.example/v1/?key=s3cret#x") == "https://h.example/v1"


def test_failed_attempts_that_were_billed_count_and_a_timeout_makes_the_cost_unknown(server):
    priced = {"prompt_price_per_m": 1e6, "completion_price_per_m": 1e6}  # $1 per token
    client = make_client(server, **priced)
    unusable = {"id": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "choices": []}
    server.inject(Reply(200, unusable))  # computed and billed, but no answer in it
    [result] = client.run_all([chat()])
    assert result.status == "error" and result.attempts == 1 and result.cost_usd == 5

    server.inject(slow(5))  # times out: the server may have computed (and billed) it all
    [result] = make_client(server, timeout_s=0.2, **priced).run_all([chat("again")])
    assert result.ok and result.attempts == 2 and result.cost_usd is None


def test_a_corrupt_cache_file_is_moved_aside_and_a_new_one_started(server, tmp_path):
    (tmp_path / "responses.sqlite").write_bytes(b"this is not a database" * 200)
    client = make_client(server, tmp_path)
    [result] = client.run_all([chat()])
    client.close()
    assert result.ok
    assert list(tmp_path.glob("responses.sqlite.unreadable-*"))
    [again] = make_client(server, tmp_path).run_all([chat()])
    assert again.cached and server.count() == 1


def test_writes_that_fail_are_kept_and_never_lost(server, tmp_path, monkeypatch):
    client = make_client(server, tmp_path)
    cache = client.cache
    broken = sqlite3.connect(":memory:")
    broken.close()  # every statement on it fails, as a locked or full database would
    healthy, cache._db = cache._db, broken
    [first] = client.run_all([chat("a")])
    assert first.ok and cache.get(first.call_id) is not None  # kept in memory meanwhile
    cache._db = healthy
    [second] = client.run_all([chat("b")])  # the next write flushes both
    client.close()
    fresh = make_client(server, tmp_path)
    assert [r.status for r in fresh.run_all([chat("a"), chat("b")])] == ["cached", "cached"]
    assert server.count() == 2 and second.ok


def test_unwritten_responses_are_spilled_at_close_and_imported_next_time(server, tmp_path):
    client = make_client(server, tmp_path)
    broken = sqlite3.connect(":memory:")
    broken.close()
    client.cache._db = broken
    [result] = client.run_all([chat()])
    client.close()
    assert list(tmp_path.glob("responses.sqlite.pending-*.jsonl"))
    [again] = make_client(server, tmp_path).run_all([chat()])
    assert result.ok and again.cached and server.count() == 1
    assert not list(tmp_path.glob("responses.sqlite.pending-*.jsonl"))


def test_a_cached_body_the_parser_rejects_is_replaced_not_bought_every_run(server, tmp_path):
    client = make_client(server, tmp_path)
    client.run_all([chat()])
    client.cache._db.execute("UPDATE responses SET response = ?", ('{"choices": []}',))
    client.cache._db.commit()
    [second] = client.run_all([chat()])  # the stored body no longer parses: bought again
    [third] = client.run_all([chat()])  # and stored in its place: a hit
    assert (second.status, third.status, server.count()) == ("ok", "cached", 2)


def test_a_key_echoed_in_a_successful_reply_is_never_stored(server, tmp_path, monkeypatch):
    key = "sk-proj-" + secrets.token_hex(16)
    monkeypatch.setenv(KEY_ENV, key)
    server.handler = lambda r: f"here is what you sent: {r.authorization}"
    client = LLMClient(
        Endpoint("test-model", base_url=server.url, api_key_env=KEY_ENV), tmp_path, seed=0
    )
    [result] = client.run_all([chat()])
    client.close()
    assert result.ok and key not in result.text and "[api key]" in result.text
    assert key.encode() not in (tmp_path / "responses.sqlite").read_bytes()
    assert key not in str(calls_frame([result]).rows())


def test_a_dead_endpoint_stops_the_batch_at_once_naming_it():
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = RecordingSleep()
    client = LLMClient(
        Endpoint("m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None, max_concurrency=1),
        sleep=sleep,
        seed=0,
    )
    with pytest.raises(EndpointUnreachable, match=rf"nothing answers at http://127.0.0.1:{port}"):
        client.run_all([chat(str(i)) for i in range(8)])
    assert len(sleep) == REFUSALS_TO_STOP - 1  # not 8 calls x 10 attempts of backoff


# -- what a person sees while calls run -----------------------------------------------------------


def test_retries_are_logged_where_a_person_sees_them_and_counted_by_reason(server, caplog):
    client = make_client(server)
    server.inject(server_error(500), server_error(500), rate_limited())
    with caplog.at_level(logging.WARNING, logger="autointerp.llm.client"):
        [result] = client.run_all([chat()])
    assert result.ok and result.attempts == 4
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3 and all(r.levelno == logging.WARNING for r in retries)
    assert "attempt 1 of 4 failed (HTTP 500" in retries[0].getMessage()
    assert client.activity() == "0 calls in flight, 3 retried (HTTP 500: 2; HTTP 429: 1)"


def test_a_batch_reports_calls_done_in_flight_and_time_left(server):
    lines: list[str] = []
    client = LLMClient(
        Endpoint("test-model", base_url=server.url, api_key_env=None),
        report=lines.append,
        report_every_s=0,
    )
    client.run_all([chat(str(i)) for i in range(3)], label="round 1: revisions")
    assert lines[-1].startswith(
        f"round 1: revisions (test-model at {server.url}): 3/3 calls (100%), 0 calls in flight, "
    )
    # No line reports a rate of zero ("70.0 calls/s" is not one).
    assert lines[-1].endswith(", done") and not re.search(r"\b0\.0 calls/s", "\n".join(lines))
