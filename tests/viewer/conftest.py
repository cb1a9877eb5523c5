"""One small real run for every viewer test: the tiny model's graph over a corpus that holds
hostile text, explained by the offline baseline and by a scripted LLM whose completion is hostile
too, revised for one round; and `autointerp view` serving it on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import pytest

from autointerp.config.settings import PROJECT_ROOT, Settings, load_settings
from autointerp.testing.llm_server import LLMServer
from tests.conftest import write_config, write_text_corpus

# Nothing here may run or leave the layout: markup, script and handlers, links, Markdown, ANSI
# escapes, NUL, a right-to-left override; and in the explanation, a long unbroken word.
HOSTILE = (
    "<script>window.__pwned=1</script> <img src=x onerror=window.__pwned=2> "
    '<a href="javascript:window.__pwned=3">click</a> [link](javascript:window.__pwned=4) '
    "# Heading **bold** `code` \x1b[31mred\x1b[0m nul\x00byte \u202eevil\u202c "
)
LLM_EXPLANATION = (
    ' <script>window.__pwned=11</script><img src=x onerror="window.__pwned=12"> '
    "[click](javascript:window.__pwned=13) **bold** \x1b[31mred\x1b[0m \u202eevil\u202c nul\x00 "
    + "W"
    * 400
)
SECRET = "sk-test-secret-key-123"
PROFILES = """
[pipeline]
explainers = ["token-statistics-baseline", "scripted"]
simulators = ["lexical-baseline"]

[explainers.token-statistics-baseline]
kind = "baseline"

[explainers.scripted]
kind = "llm"
model = "scripted-explainer"
base_url = "{url}"
api_key_env = "SCRIPTED_API_KEY"
n = 1
max_tokens = 60
neuron_sample = "first:8"

[simulators.lexical-baseline]
kind = "baseline"
method = "lexical-baseline"

[revisions]
rounds = 1
neuron_sample = "first:8"
"""


@dataclass(frozen=True)
class Run:
    settings: Settings
    env: dict[str, str]  # what a user's shell would hold: config, home, the key
    output: str  # what `autointerp run` printed

    @property
    def root(self) -> str:
        return self.settings.model_root(self.settings.model("tiny"))


@pytest.fixture(scope="session")
def viewer_run(tmp_path_factory, tiny_model_dir) -> Run:
    folder = tmp_path_factory.mktemp("viewer")
    corpus = write_text_corpus(folder / "corpus")
    (corpus / "hostile.txt").write_text(HOSTILE * 12)
    env = {
        **os.environ,
        "AUTOINTERP_CONFIG": str(folder / "autointerp.toml"),
        "AUTOINTERP_HOME": str(folder / "home"),
        "SCRIPTED_API_KEY": SECRET,
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    for name in ("DAGSTER_HOME", "AUTOINTERP_DELTA_ROOT", "AUTOINTERP_ALLOW_HUB"):
        env.pop(name, None)
    with LLMServer(lambda _received: LLM_EXPLANATION) as server:
        write_config(
            folder / "autointerp.toml",
            tiny_model_dir,
            corpus,
            extra=PROFILES.format(url=server.url),
        )
        run = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "run", "--layers", "0-1", "--excerpts", "80"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    settings = load_settings(folder / "autointerp.toml", home=folder / "home")
    return Run(settings=settings, env=env, output=run.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def viewer_url(viewer_run):
    """`autointerp view` on a free loopback port, as a user starts it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "view", "--port", str(port)],
        env=viewer_run.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/static/viewer.css", timeout=5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(process.stdout.read().decode()) from None
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=20)
