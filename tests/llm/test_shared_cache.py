"""The response cache shared by workers on several machines: objects under the Delta root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autointerp.llm import Endpoint, LLMClient, LLMRequest, SharedResponseCache, request_hash
from autointerp.llm.shared_cache import _object_key
from autointerp.storage.object_store import ObjectStore
from autointerp.testing.llm_server import LLMServer
from tests.conftest import storage_section, write_config, write_text_corpus


@pytest.fixture
def server():
    with LLMServer() as s:
        yield s


def chat(content: str) -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": content}])


def client(server: LLMServer, cache: SharedResponseCache) -> LLMClient:
    return LLMClient(Endpoint("test-model", base_url=server.url, api_key_env=None), cache=cache)


# A worker: settings from its own AUTOINTERP_HOME and the shared configuration, the LLM client
# built by the graph's resource.
_WORKER = """
import json, sys
from autointerp.config.settings import load_settings
from autointerp.llm import LLMRequest
from resources.llm import LLMClients
settings = load_settings()
llm = LLMClients.from_settings(settings)
client = llm.client(settings.profiles.explainer("remote"))
requests = [LLMRequest.chat([{"role": "user", "content": c}]) for c in sys.argv[1:]]
results = client.run_all(requests)
client.close()
print(json.dumps([[r.status, r.call_id, r.text] for r in results]))
"""


def test_workers_sharing_no_disk_make_no_repeated_call(tmp_path, server, s3_root, tiny_model_dir):
    corpus = write_text_corpus(tmp_path / "corpus")
    remote = f'[explainers.remote]\nkind = "llm"\nmodel = "m"\nbase_url = "{server.url}"\n'
    config = write_config(
        tmp_path / "autointerp.toml",
        tiny_model_dir,
        corpus,
        extra=storage_section(s3_root, 'llm_cache = "shared"\n') + remote,
    )

    def worker(name: str, *contents: str) -> list[list]:
        home = tmp_path / name  # each worker's own disk
        env = {**os.environ, "AUTOINTERP_CONFIG": str(config), "AUTOINTERP_HOME": str(home)}
        done = subprocess.run(
            [sys.executable, "-c", _WORKER, *contents],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).parents[2],
        )
        assert done.returncode == 0, done.stderr
        assert not (home / "llm_cache" / "responses.sqlite").exists()
        return json.loads(done.stdout)

    first = worker("machine-a", *[f"request {i}" for i in range(6)])
    second = worker("machine-b", *[f"request {i}" for i in range(10)])

    assert [status for status, _, _ in first] == ["ok"] * 6
    assert [status for status, _, _ in second] == ["cached"] * 6 + ["ok"] * 4
    assert [(c, t) for _, c, t in second[:6]] == [(c, t) for _, c, t in first]
    assert server.count() == 10  # every request paid for once, by one machine or the other
    shared = SharedResponseCache(
        f"{s3_root.uri}/llm_cache", s3_root.storage_options, spill_folder=tmp_path / "spill"
    )
    assert shared.count() == 10  # under the Delta root, in the bucket


def test_an_entry_is_written_once(tmp_path):
    first = SharedResponseCache(str(tmp_path / "cache"), spill_folder=tmp_path / "a")
    second = SharedResponseCache(str(tmp_path / "cache"), spill_folder=tmp_path / "b")
    first.put("k" * 64, {"q": 1}, "first body")
    second.put("k" * 64, {"q": 1}, "second body")  # another worker bought it too: kept out
    assert second.get("k" * 64) == first.get("k" * 64) == "first body"
    second.put("k" * 64, {"q": 1}, "parser-approved body", replace=True)
    assert first.get("k" * 64) == "parser-approved body"
    assert first.count() == 1


@pytest.mark.parametrize(
    "damage",
    [b'{"key": "', b"not json", b'{"key": "another", "response": "x"}', b'{"key": 1}'],
)
def test_a_damaged_entry_is_asked_again_and_replaced(tmp_path, server, damage):
    location = str(tmp_path / "cache")
    with client(server, SharedResponseCache(location, spill_folder=tmp_path)) as first:
        [bought] = first.run_all([chat("hello")])
    ObjectStore(location).put(_object_key(bought.call_id), damage)

    with client(server, SharedResponseCache(location, spill_folder=tmp_path)) as again:
        [asked] = again.run_all([chat("hello")])
        [hit] = again.run_all([chat("hello")])
    assert (asked.status, hit.status, server.count()) == ("ok", "cached", 2)
    stored = json.loads(ObjectStore(location).get(_object_key(bought.call_id)))
    assert stored["key"] == bought.call_id and stored["response"]


def test_a_store_that_fails_loses_no_response(tmp_path, server):
    location, spill = tmp_path / "cache", tmp_path / "spill"
    endpoint = Endpoint("test-model", base_url=server.url, api_key_env=None)
    key = request_hash(chat("paid for").payload(endpoint))
    location.mkdir()
    (location / key[:2]).write_text("a file where the entry's folder should be")  # writes fail

    with client(server, SharedResponseCache(str(location), spill_folder=spill)) as broken:
        [bought] = broken.run_all([chat("paid for")])
        assert bought.status == "ok"
    assert len(list(spill.glob("shared.pending-*.jsonl"))) == 1  # kept on the local disk

    (location / key[:2]).unlink()
    with client(server, SharedResponseCache(str(location), spill_folder=spill)) as healed:
        [hit] = healed.run_all([chat("paid for")])
    assert (hit.status, server.count()) == ("cached", 1)
    assert not list(spill.glob("shared.pending-*.jsonl"))
    assert ObjectStore(str(location)).get(_object_key(key)) is not None
