"""The reference simulator against a real llama-cpp-python server on loopback (opt-in:
`make test-llama` installs the server and points AUTOINTERP_TEST_GGUF at the SmolLM2 GGUF).

Skipped, with the reason, where the server package or the GGUF is missing: the recorded vLLM and
llama.cpp replies of tests/simulate keep the parser honest without one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from autointerp.llm.client import LLMClient
from autointerp.llm.endpoint import Endpoint
from autointerp.llm.probe import ServerUnsuitable, probe
from autointerp.llm.requests import LLMRequest
from autointerp.simulate.parsers import parse_all_at_once, parse_chat_logprobs
from autointerp.simulate.simulator_prompt import (
    build_all_at_once_request,
    build_chat_request,
)

pytestmark = pytest.mark.llama_server
GGUF = os.environ.get("AUTOINTERP_TEST_GGUF", "")
START_S = 180  # loading a model and warming up, on a slow machine
TOKENS = [" The", " cat", " sat", " on", " the", " mat", "."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(*flags: str) -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    if not Path(GGUF).is_file():
        pytest.skip("set AUTOINTERP_TEST_GGUF to a GGUF model file (make test-llama does)")
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", GGUF, "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--n_ctx", "4096", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the llama.cpp server did not start: {command}")
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from _serve("--logits_all", "True")


def client(url: str) -> LLMClient:
    return LLMClient(Endpoint("local", url, api_key_env=None, timeout_s=300, max_concurrency=1))


def test_all_at_once_reads_every_target_from_a_real_echo(server):
    request = build_all_at_once_request("the word cat", TOKENS, few_shot="default")
    with client(server) as llm:
        llm_request = LLMRequest.completion(request.prompt, **request.params)
        probe(llm, [llm_request], needs="prompt_logprobs")
        [result] = llm.run_all([llm_request])
    assert result.ok and result.completion_tokens <= 1  # max_tokens honoured: nothing generated
    simulation = parse_all_at_once(request, result.logprobs[0])
    assert len(simulation.missing) <= len(TOKENS) // 4
    assert all(0 <= v <= 10 for v in simulation.expected_activations if v is not None)


def test_chat_logprobs_from_a_real_server(server):
    request = build_chat_request("the word cat", TOKENS, few_shot="default")
    with client(server) as llm:
        llm_request = LLMRequest.chat(request.messages, **request.params)
        probe(llm, [llm_request], needs="chat_logprobs")
        [result] = llm.run_all([llm_request])
    assert result.ok
    simulation = parse_chat_logprobs(request, result.logprobs[0])
    assert len(simulation.missing) < len(TOKENS)


def test_a_server_without_logits_all_is_refused_naming_it():
    request = build_all_at_once_request("the word cat", TOKENS, few_shot="default")
    for url in _serve():
        with client(url) as llm, pytest.raises(ServerUnsuitable, match="--logits_all True"):
            probe(
                llm,
                [LLMRequest.completion(request.prompt, **request.params)],
                needs="prompt_logprobs",
            )
