"""A static copy of the viewer for one model: the same pages as files, linked relatively, that a
browser opens from disk with no server (`autointerp view --export DIR`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autointerp.viewer.layer import LayerQuery
from autointerp.viewer.pages import BY_SCORE, Links, Site
from autointerp.viewer.web import STATIC

ALL = LayerQuery(page_size=None)  # every neuron on one page, by neuron


@dataclass(frozen=True)
class Exported:
    folder: Path
    layers: list[int]
    pages: int
    bytes: int


def export_site(
    site: Site, model: str, folder: Path, layers: Sequence[int] | None = None
) -> Exported:
    """Write the models page, `model`'s overview, and for each of `layers` (default: every layer
    with records) its table in two orders and every neuron's page, with the static files.
    `site` should read whole layers (`Site(..., whole_layers=True)`): each layer is then read
    once, not once per neuron."""
    chosen = sorted(layers) if layers is not None else site.layers(model)
    for layer in chosen:
        site.check_layer(model, layer)
    only = {model: frozenset(chosen)}
    pages = 0

    def write(path: str, render: Callable[[Links], str]) -> None:
        nonlocal pages
        depth = len(Path(path).parts)  # folders below the copy's root
        target = folder / path / "index.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(Links(static_site=True, depth=depth, only=only)), "utf-8")
        pages += 1

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(STATIC, folder / "static", dirs_exist_ok=True)
    write("", site.index)
    write(f"m/{model}", lambda links: site.overview(model, links))
    _, tables = site.model(model)
    for layer in chosen:
        base = f"m/{model}/l/{layer}"
        write(base, lambda links, layer=layer: site.layer(model, layer, ALL, links))
        write(
            f"{base}/by-score",
            lambda links, layer=layer: site.layer(model, layer, BY_SCORE, links),
        )
        neurons = tables.frame("neuron_records", ["neuron", "max_activation"], layer=layer)
        for neuron in sorted(neurons["neuron"]):
            write(
                f"{base}/n/{neuron}",
                lambda links, layer=layer, neuron=neuron: site.neuron(model, layer, neuron, links),
            )
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return Exported(folder=folder, layers=chosen, pages=pages, bytes=size)
