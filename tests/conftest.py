"""Shared fixtures: a tiny model and corpus declared in a configuration of their own."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from autointerp.config.settings import Settings, load_settings
from autointerp.testing.tiny_models import make_tiny_model

WORDS = [
    "the",
    "king",
    "and",
    "queen",
    "walked",
    "in",
    "the",
    "garden",
    "of",
    "the",
    "castle",
    "talking",
    "of",
    "love",
    "war",
    "and",
    "bread",
    "numbers",
    "like",
    "1",
    "2",
    "3",
    "and",
    "42",
    "appear",
    "in",
    "the",
    "text",
    "shall",
    "I",
    "compare",
    "thee",
    "to",
    "a",
    "summer's",
    "day",
    "thou",
    "art",
    "more",
    "lovely",
    "def",
    "main",
    "return",
    "print",
    "hello",
    "world",
    "brackets",
    "keys",
    "quick",
    "brown",
    "fox",
]


def write_text_corpus(folder: Path, n_words: int = 6000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for doc in range(3):
        words = [rng.choice(WORDS) for _ in range(n_words // 3)]
        (folder / f"doc{doc}.txt").write_text(" ".join(words))
    return folder


def write_config(
    path: Path, model_dir: Path, corpus_dir: Path, *, num_layers: int = 2, extra: str = ""
) -> Path:
    path.write_text(
        f"""
[autointerp]
default_model = "tiny"

[models.tiny]
path = "{model_dir}"
num_layers = {num_layers}
dtype = "float32"
device = "cpu"
batch_size = 8
context_length = 64

[models.hub-only]
hf_id = "openai-community/gpt2"
num_layers = 12

[corpus]
source = "text:{corpus_dir}"
excerpt_tokens = 16

[records]
top_k = 8
random_k = 6
quantile_k = 2
boundary_pool = 32
{extra}
"""
    )
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models"), "llama", num_layers=2)


@pytest.fixture
def tiny_settings(tmp_path, tiny_model_dir, monkeypatch) -> Settings:
    """Settings for the tiny model on a small text corpus, writing under tmp_path/home."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    corpus = write_text_corpus(tmp_path / "corpus")
    config = write_config(tmp_path / "autointerp.toml", tiny_model_dir, corpus)
    return load_settings(config, home=tmp_path / "home")


@pytest.fixture
def tiny_env(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """AUTOINTERP_CONFIG / AUTOINTERP_HOME pointing at a tiny model, as a user would set them."""
    corpus = write_text_corpus(tmp_path / "corpus")
    config = write_config(tmp_path / "autointerp.toml", tiny_model_dir, corpus)
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("AUTOINTERP_ALLOW_HUB", raising=False)
    return tmp_path


def statuses(home) -> dict[str, dict[str, str]]:
    """Dagster's own view: each asset's stale status per layer, read through the instance."""
    from assets import model_assets
    from pipelines.refresh import stale_statuses

    settings = load_settings()
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        found = stale_statuses(instance, model_assets(settings, settings.model("tiny")))
    return {key.path[-1]: {str(p): s.value for p, s in per.items()} for key, per in found.items()}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A local S3-compatible server (moto's server mode) on loopback, for the session. It runs
    in a process of its own: some deltalake calls (a table's history) hold the GIL while they
    wait for the store, so a server thread in the test process would never answer them."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # only a guard against a server that never starts
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(timeout=30)


@dataclass(frozen=True)
class S3Root:
    uri: str  # s3://<a new bucket>/tables
    bucket: str
    storage_options: dict[str, str]  # the endpoint: no credential (those are in the env)


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch) -> S3Root:
    """A new bucket on the local S3 server; credentials in the environment, as a user keeps
    them, and the endpoint in the storage options."""
    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    bucket = f"autointerp-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    options = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true"}
    return S3Root(f"s3://{bucket}/tables", bucket, options)


def storage_section(root: S3Root, extra: str = "") -> str:
    """The `[storage]` section of a configuration keeping the tables under `root`."""
    options = ", ".join(f'{k} = "{v}"' for k, v in root.storage_options.items())
    return f'[storage]\nroot = "{root.uri}"\nstorage_options = {{ {options} }}\n{extra}'


CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless, with nothing that reaches for the network on its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """A real browser for the tests that look at what a user sees (`make browser` installs it)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `make browser` installs Debian's Chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests save their screenshots (kept after the run, ignored by git)."""
    from autointerp.config.settings import PROJECT_ROOT

    folder = PROJECT_ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder
