"""Where the published layout keeps each file, reading them from a folder or a URL, and writing an
output folder that appears whole or not at all.

A dataset root holds `collated-activations/{layer}/{neuron}.json` (one NeuronRecord) and
`explanations/{layer}/{neuron}.jsonl` (one line: NeuronSimulationResults). A neuron without an
explanations file has no explanation, as in the publication's own reader; a neuron without a
records file is an error. A URL root is read only when the network is allowed (`allow_hub`).
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import InputError

RECORDS = "collated-activations"
EXPLANATIONS = "explanations"
_URL_SCHEMES = ("http://", "https://")
_URL_TIMEOUT_S = 60
_URL_READERS = 16  # files fetched at once from a URL root: the latency is the server's


def is_url(location: str) -> bool:
    return location.startswith(_URL_SCHEMES)


def record_file(root: str, layer: int, neuron: int) -> str:
    return f"{root.rstrip('/')}/{RECORDS}/{layer}/{neuron}.json"


def explanation_file(root: str, layer: int, neuron: int) -> str:
    return f"{root.rstrip('/')}/{EXPLANATIONS}/{layer}/{neuron}.jsonl"


@dataclass(frozen=True)
class Dataset:
    """A published dataset: a folder, or a URL read only when `allow_network`."""

    root: str
    allow_network: bool = False

    def __post_init__(self) -> None:
        if is_url(self.root):
            if not self.allow_network:
                raise InputError(
                    f"openai_dataset {self.root} is a URL: reading it needs the network, which "
                    "is off by default; set AUTOINTERP_ALLOW_HUB=1 (or allow_hub = true)"
                )
        elif not Path(self.root).expanduser().is_dir():
            raise InputError(f"openai_dataset {self.root} is not a folder")

    @property
    def location(self) -> str:
        return self.root if is_url(self.root) else str(Path(self.root).expanduser().resolve())

    def check_layer(self, layer: int) -> None:
        """A missing layer is named as such, rather than as its first missing neuron."""
        if is_url(self.root):
            return  # a URL root cannot be listed: its first missing file says it
        folder = Path(self.location) / RECORDS / str(layer)
        if not folder.is_dir():
            raise InputError(f"{folder} is missing: the dataset has no layer {layer}")

    def read(self, files: Sequence[str]) -> list[str | None]:
        """Each file's text, or None where the file does not exist."""
        if is_url(self.root):
            with ThreadPoolExecutor(_URL_READERS) as pool:
                return list(pool.map(_fetch, files))
        return [_read_local(Path(file)) for file in files]


def _read_local(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot be read ({err})") from None


def _fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise InputError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, UnicodeDecodeError) as err:
        raise InputError(f"{url}: cannot be read ({err})") from None


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A fresh folder to write into, renamed to `out` when the block completes and removed when
    it fails, so that `out` holds a whole export or nothing. `out` must not exist yet, or be an
    empty folder."""
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder: choose a new one")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        if out.exists():
            out.rmdir()
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
