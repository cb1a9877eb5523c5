"""What the viewer answers for bad input: a page that names what exists, or the command that makes
a table that is missing."""

from __future__ import annotations

from autointerp.errors import InputError

# Tables the summaries write (every layer at once) rather than the per-layer runs.
SUMMARIES = ("score_summary", "compare", "revision_summary")


class NotFoundError(InputError):
    """An unknown model, layer or neuron; the message names what exists."""


def making_command(table: str, model: str, layer: int | None = None) -> str:
    """The command that materializes `table` (for `layer`) of `model`."""
    if table in SUMMARIES:
        return f"autointerp run --model {model}  (or autointerp refresh --model {model})"
    layers = f" --layers {layer}" if layer is not None else ""
    return f"autointerp run --model {model}{layers}"


def layer_range(layers: list[int]) -> str:
    """'0-29', or a list where there are gaps; 'none' when empty."""
    if not layers:
        return "none"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ", ".join(map(str, layers))
