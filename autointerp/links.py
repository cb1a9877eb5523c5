"""Where a neuron can be looked at further: the command that prints its lineage, and its page
in the neuron viewer that `autointerp view` serves (by default on 127.0.0.1:8765)."""

from __future__ import annotations

import shlex
from urllib.parse import quote

VIEWER_URL = "http://127.0.0.1:8765"


def lineage_command(model: str, layer: int, neuron: int, explainer: str | None = None) -> str:
    words = ["autointerp", "lineage", "--model", model, "--layer", str(layer)]
    words += ["--neuron", str(neuron), *(["--explainer", explainer] if explainer else [])]
    return shlex.join(words)


def viewer_url(model: str, layer: int, neuron: int, base: str = VIEWER_URL) -> str:
    return f"{base}/m/{quote(model, safe='')}/l/{layer}/n/{neuron}"
