"""The probe call at a stage's start, against a scripted local OpenAI-compatible server: a server
that cannot serve the stage is refused in one line that names the setting to change."""

from __future__ import annotations

import logging

import pytest

from autointerp.llm.client import LLMClient
from autointerp.llm.endpoint import Endpoint
from autointerp.llm.probe import PROBE_ATTEMPTS, ServerUnsuitable, probe
from autointerp.llm.requests import LLMRequest
from autointerp.simulate.simulator_prompt import ALL_AT_ONCE_PARAMS
from autointerp.testing.llm_server import (
    Answer,
    LLMServer,
    Reply,
    http_error,
    no_sleep,
    server_error,
)

ECHO = [LLMRequest.completion(f"text {i}\tunknown\n", **ALL_AT_ONCE_PARAMS) for i in range(5)]
CHAT = [
    LLMRequest.chat([{"role": "user", "content": "x" * i}], logprobs=True, top_logprobs=15)
    for i in range(1, 6)
]


def refusal(handler, requests, needs) -> tuple[str, int]:
    with LLMServer(handler) as server:
        client = LLMClient(Endpoint("m", server.url, api_key_env=None), sleep=no_sleep)
        with client, pytest.raises(ServerUnsuitable) as raised:
            probe(client, requests, needs=needs)
        return str(raised.value), server.count()


def no_prompt_logprobs(received):
    choice = {"index": 0, "text": " ok", "logprobs": None, "finish_reason": "length"}
    return Reply(200, {"object": "text_completion", "choices": [choice]})


@pytest.mark.parametrize(
    ("handler", "requests", "needs", "fix"),
    [
        (no_prompt_logprobs, ECHO, "prompt_logprobs", "--logits_all True"),
        (
            # llama-cpp-python started without --logits_all
            lambda _: Reply(
                500,
                {
                    "error": {
                        "message": "logprobs is not supported for models created with "
                        "logits_all=False",
                        "type": "internal_server_error",
                    }
                },
            ),
            ECHO,
            "prompt_logprobs",
            "--logits_all True",
        ),
        (lambda _: Answer(["1"], logprobs=False), CHAT, "chat_logprobs", "plain_text"),
        (
            lambda _: http_error(400, "Requested tokens (5000) exceed context window of 2048"),
            CHAT,
            None,
            "--n_ctx",
        ),
        (
            lambda _: http_error(400, "Requested sample logprobs of 15, which is greater than 5"),
            ECHO,
            "prompt_logprobs",
            "--max-logprobs",
        ),
        (
            lambda _: http_error(400, "This model's maximum context length is 2048 tokens."),
            ECHO,
            "prompt_logprobs",
            "--max-model-len",
        ),
    ],
)
def test_a_server_that_cannot_serve_the_stage_is_refused_in_one_line(handler, requests, needs, fix):
    message, sent = refusal(handler, requests, needs)
    assert fix in message and "\n" not in message
    assert message.startswith("http://127.0.0.1:") and "cannot serve this stage" in message
    assert sent <= PROBE_ATTEMPTS  # refused at once: not every call retried to its limit


def test_a_server_that_can_serve_costs_no_extra_call(tmp_path):
    with LLMServer() as server:
        endpoint = Endpoint("m", server.url, api_key_env=None)
        with LLMClient(endpoint, tmp_path / "cache", sleep=no_sleep) as client:
            probe(client, ECHO, needs="prompt_logprobs")
            probe(client, CHAT, needs="chat_logprobs")
            results = client.run_all(ECHO + CHAT)
            again = client.run_all(ECHO + CHAT)
        assert all(r.ok for r in results)
        assert server.count() == len(ECHO) + len(CHAT)  # the probes' replies are reused
        # The two the probes paid for are audited as paid, not cached; once only.
        assert not any(r.cached for r in results) and all(r.attempts >= 1 for r in results)
        assert all(r.cached for r in again)


def test_a_passing_failure_only_warns(caplog):
    with LLMServer() as server:
        server.inject(server_error(503), server_error(503))
        client = LLMClient(Endpoint("m", server.url, api_key_env=None), sleep=no_sleep)
        with client, caplog.at_level(logging.WARNING):
            probe(client, ECHO, needs="prompt_logprobs")
    assert "HTTP 503" in caplog.text and "going on" in caplog.text
