"""A real `dagster dev` for tests and benchmarks: started on a free loopback port in a process
group of its own (its shutdown ignores SIGTERM, so the group is killed), waited for until its code
location has loaded, and queried over GraphQL with the standard library alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

LOCATIONS = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


class DagsterDevError(RuntimeError):
    """dagster dev exited, never came up, or answered a query with errors."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterDev:
    """`dagster dev -w workspace.yaml` in `project`, with `env`, logging to `log`."""

    def __init__(
        self, project: Path, env: Mapping[str, str], log: Path, location: str, start_s: float
    ) -> None:
        self.project, self.env, self.log = project, dict(env), log
        self.location, self.start_s = location, start_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> DagsterDev:
        dagster = str(Path(sys.executable).parent / "dagster")
        command = [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=self.project,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_for(self._location_loaded, "the code location", self.start_s)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float, every=1.0):
        """`condition()` once it is truthy, polled; DagsterDevError naming `what` if it never
        is, or if dagster dev exits meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DagsterDevError(f"dagster dev exited:\n{self.tail()}")
            try:
                value = condition()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                value = None
            if value:
                return value
            time.sleep(every)
        raise DagsterDevError(f"{what}: not seen in {timeout:.0f} s\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def _location_loaded(self) -> bool:
        workspace = self.graphql(LOCATIONS)["workspaceOrError"]
        entry = {e["name"]: e for e in workspace.get("locationEntries", [])}.get(self.location)
        if not entry or entry["loadStatus"] != "LOADED":
            return False
        loaded = entry["locationOrLoadError"]
        if loaded["__typename"] != "RepositoryLocation":
            raise DagsterDevError(f"the code location failed to load: {loaded}")
        return True
