"""A llama-cpp-python server (`python -m llama_cpp.server`) serving a GGUF on a free loopback
port, for the opt-in tests and the benchmark of the LLM stages against a real local server
(`make test-llama`, `make bench-llama`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_S = 180  # loading a model and warming up, on a slow machine
# Where `make test-llama` points it: the SmolLM2 GGUF unpacked from its PyPI wheel.
GGUF_ENV = "AUTOINTERP_TEST_GGUF"


class ServerDidNotStart(RuntimeError):
    pass


def configured_gguf() -> Path | None:
    """The GGUF named by AUTOINTERP_TEST_GGUF, when it names a file."""
    path = Path(os.environ.get(GGUF_ENV, ""))
    return path if path.is_file() else None


def _why(server: subprocess.Popen, log: Path) -> str:
    """Why the server is not up: its exit (an illegal instruction named with the fix) and the
    last lines it wrote."""
    code = server.poll()
    if code is None:
        return f"not answering after {START_S} s"
    if code == -signal.SIGILL:
        return (
            "illegal instruction: llama-cpp-python was built for instructions this CPU lacks; "
            "reinstall it (pip install --force-reinstall --no-cache-dir) with the CMAKE_ARGS "
            "of the Makefile's llama-server target"
        )
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    return f"exit status {code}: {tail or 'no output'}"


@contextmanager
def llama_server(
    gguf: Path, *flags: str, n_ctx: int = 4096, log: Path | None = None
) -> Iterator[str]:
    """The base URL (`http://127.0.0.1:PORT/v1`) of a server of `gguf` started with `flags`
    (e.g. "--logits_all", "True"), stopped on exit; its output goes to `log` (default: a
    temporary file, read when it fails to start)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), *flags]
    with tempfile.TemporaryDirectory() as folder:
        log = log or Path(folder) / "server.log"
        with log.open("ab") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + START_S
            while True:
                try:
                    urllib.request.urlopen(f"{url}/models", timeout=5).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise ServerDidNotStart(
                            f"the llama.cpp server did not start ({_why(server, log)}): "
                            f"{' '.join(command)}"
                        ) from None
                    time.sleep(1)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # busy with a long prompt: it answers no signal
                server.kill()
                server.wait()
