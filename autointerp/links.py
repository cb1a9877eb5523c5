"""Where a neuron can be looked at further: the command that prints its lineage, and its page in
the neuron viewer that `autointerp view` serves (by default on 127.0.0.1:8765; the viewer's
stable URLs are listed in `autointerp.viewer.pages`)."""

from __future__ import annotations

import shlex
from urllib.parse import quote

# Where `autointerp view` serves by default: loopback only.
VIEW_HOST, VIEW_PORT = "127.0.0.1", 8765
VIEWER_URL = f"http://{VIEW_HOST}:{VIEW_PORT}"


def lineage_command(model: str, layer: int, neuron: int, explainer: str | None = None) -> str:
    words = ["autointerp", "lineage", "--model", model, "--layer", str(layer)]
    words += ["--neuron", str(neuron), *(["--explainer", explainer] if explainer else [])]
    return shlex.join(words)


def neuron_path(model: str, layer: int, neuron: int) -> str:
    """A neuron's page in the viewer, relative to its root: `m/<model>/l/<layer>/n/<neuron>`."""
    return f"m/{quote(model, safe='')}/l/{layer}/n/{neuron}"


def viewer_url(model: str, layer: int, neuron: int, base: str = VIEWER_URL) -> str:
    return f"{base}/{neuron_path(model, layer, neuron)}"
