"""Every page of the viewer rendered to HTML from the data queries, for the server and for the
static export alike: only the links differ (`Links`).

URLs, stable so that other tools and documents can link to them:

    /                                   the declared subject models side by side
    /m/<model>                          the model overview
    /m/<model>/l/<layer>                every neuron of a layer (?sort= &order= &q= &explainer=
                                        &status= &page=)
    /m/<model>/l/<layer>/n/<neuron>     one neuron (?explainer= &simulator= picks whose
                                        simulation the heatmaps show)
    /m/<model>/search?q=                explanations containing the words, across layers

A static copy has the same paths with `index.html` appended, linked relatively; its layer pages
hold every neuron in two orders (by neuron, and by score under `by-score/`), and it has no search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import jinja2
import polars as pl

from autointerp.config.settings import ModelSpec, Settings
from autointerp.links import neuron_path
from autointerp.study.comparison import COMPARISON_KEY, comparison_table
from autointerp.viewer import charts
from autointerp.viewer.errors import NotFoundError, layer_range
from autointerp.viewer.heatmap import heatmap
from autointerp.viewer.layer import LayerQuery, layer_page
from autointerp.viewer.neuron import SETS, SPLITS, neuron_page
from autointerp.viewer.overview import (
    histogram,
    model_overview,
    optional,
    pair_label,
    pair_totals,
)
from autointerp.viewer.search import search_explanations
from autointerp.viewer.tables import MissingTableError, ModelTables
from autointerp.viewer.text import visible_text, visible_token

# No script but the viewer's own files; no request leaves the page's origin. Vega draws with the
# expression interpreter (`ast`), so no eval is needed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'"
)
BY_SCORE = LayerQuery(sort="score", descending=True, page_size=None)
REVISED = LayerQuery(status="revised")
# What the overview reads: it is computed again when one of them changes.
OVERVIEW_TABLES = ["neuron_records", "scores", "score_summary", "revision_summary", "compare"]


@dataclass(frozen=True)
class Links:
    """Where pages are: absolute paths on the server; in a static copy, paths to `index.html`
    files relative to the page (`depth` folders below the copy's root), to the models and layers
    it holds (`only`). A link a static copy cannot follow (a query, the search, a page it does
    not hold) is None, and the page leaves it out."""

    static_site: bool = False
    depth: int = 0
    only: Mapping[str, frozenset[int]] | None = None

    def _to(self, path: str) -> str:
        if not self.static_site:
            return "/" + path
        return "../" * self.depth + (f"{path}/" if path else "") + "index.html"

    def _holds(self, model: str, layer: int | None = None) -> bool:
        if not self.static_site or self.only is None:
            return True
        return model in self.only and (layer is None or layer in self.only[model])

    def asset(self, name: str) -> str:
        return ("../" * self.depth if self.static_site else "/") + f"static/{name}"

    def index(self) -> str:
        return self._to("")

    def model(self, model: str) -> str | None:
        return self._to(f"m/{quote(model, safe='')}") if self._holds(model) else None

    def layer(self, model: str, layer: int, query: LayerQuery | None = None) -> str | None:
        path = f"m/{quote(model, safe='')}/l/{layer}"
        params = query.params() if query else {}
        if not self.static_site:
            return "/" + path + (f"?{urlencode(params)}" if params else "")
        if not self._holds(model, layer):
            return None
        if not params:
            return self._to(path)
        return self._to(f"{path}/by-score") if params == BY_SCORE.params() else None

    def neuron(
        self, model: str, layer: int, neuron: int, focus: tuple[str, str] | None = None
    ) -> str | None:
        path = neuron_path(model, layer, neuron)
        if not self.static_site:
            query = {"explainer": focus[0], "simulator": focus[1]} if focus else {}
            return "/" + path + (f"?{urlencode(query)}" if query else "")
        return self._to(path) if focus is None and self._holds(model, layer) else None

    def search(self, model: str) -> str | None:
        return None if self.static_site else f"/m/{quote(model, safe='')}/search"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("autointerp.viewer", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(token=visible_token, text=visible_text, num=_num, score=_score)
    env.globals.update(csp=CSP, splits=SPLITS, sets=SETS, revised=REVISED, heatmap=heatmap)
    return env


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}g}"


def _score(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


class Site:
    """The viewer over every model declared in the settings; each model's tables stay open."""

    def __init__(
        self, settings: Settings, *, refresh_s: float = 1.0, whole_layers: bool = False
    ) -> None:
        self.settings = settings
        self.env = environment()
        self._tables = {
            name: ModelTables(
                settings.model_root(spec),
                settings.storage.storage_options,
                refresh_s=refresh_s,
                whole_layers=whole_layers,
            )
            for name, spec in settings.models.items()
        }
        # The comparison of models (comparison/across_models) has a root of its own.
        self._comparison = ModelTables(
            f"{settings.delta_root}/{COMPARISON_KEY[0]}",
            settings.storage.storage_options,
            refresh_s=refresh_s,
        )

    def model(self, name: str) -> tuple[ModelSpec, ModelTables]:
        if name not in self.settings.models:
            declared = ", ".join(sorted(self.settings.models)) or "none"
            raise NotFoundError(f"no model {name!r}; the models declared are: {declared}")
        return self.settings.models[name], self._tables[name]

    def layers(self, name: str) -> list[int]:
        """The layers of a model whose records exist."""
        return self.model(name)[1].snapshot("neuron_records").partitions

    def check_layer(self, name: str, layer: int) -> None:
        spec, tables = self.model(name)
        if layer not in spec.layers:
            raise NotFoundError(
                f"{name} has no layer {layer}: its layers are {layer_range(spec.layers)}"
            )
        if layer not in self.layers(name):
            raise MissingTableError(
                "neuron_records",
                tables.uri("neuron_records"),
                f"layer {layer} of {name} has no neuron records yet; the layers that have them: "
                f"{layer_range(self.layers(name))}",
            )

    def _render(self, template: str, links: Links, **context: object) -> str:
        return self.env.get_template(template).render(links=links, **context)

    # --- pages ---------------------------------------------------------------------------

    def _models(self) -> tuple[list[dict], charts.Spec | None]:
        """Every declared model with its layers and pairs' scores, and the chart that sets the
        models with scores side by side (None when fewer than two have them)."""
        models, curves = [], []
        for name, spec in sorted(self.settings.models.items()):
            tables = self._tables[name]
            layers = self.layers(name) if tables.exists("neuron_records") else []
            summary = optional(tables, "score_summary")
            pairs = None
            if summary is not None and summary.height:
                summary = summary.with_columns(pair_label())
                pairs = pair_totals(summary).to_dicts()
                depth = pl.col("layer") / max(spec.num_layers - 1, 1)
                curves.append(
                    summary.select("layer", "mean", "pair", depth.alias("depth"))
                    .with_columns(model=pl.lit(name))
                    .drop_nulls("mean")
                )
            models.append(
                {"name": name, "spec": spec, "layers": layer_range(layers), "pairs": pairs}
            )
        return models, charts.models_by_depth(pl.concat(curves)) if len(curves) > 1 else None

    def _compared(self) -> dict | None:
        """The stored comparison of models as the table `autointerp compare --models` prints
        and a chart of the differences from the reference; None before it was materialized."""
        comparison = optional(self._comparison, COMPARISON_KEY[1])
        if comparison is None or comparison.is_empty():
            return None
        table = comparison_table(comparison).with_columns(pair_label())
        columns = [c for c in table.columns if c not in ("explainer", "simulator", "pair")]
        return {
            "reference": comparison["reference"][0],
            "columns": columns,
            "pairs": [
                (pair, rows.select(columns).rows())
                for (pair,), rows in table.group_by("pair", maintain_order=True)
            ],
            "chart": charts.model_differences(comparison),
        }

    def index(self, links: Links) -> str:
        models, chart = self._models()
        return self._render(
            "index.html", links, models=models, chart=chart, compared=self._compared(), model=None
        )

    def overview(self, name: str, links: Links) -> str:
        spec, tables = self.model(name)

        def compute() -> dict:
            overview = model_overview(tables, name, spec.num_layers)
            summary = overview.summary
            return {
                "o": overview,
                "histograms": charts.score_histograms(overview.histogram)
                if overview.histogram.height
                else None,
                "curves": charts.layer_curves(summary)
                if summary is not None and summary.height
                else None,
            }

        page = tables.derived("overview", OVERVIEW_TABLES, compute)
        _, models = self._models()
        return self._render("overview.html", links, model=name, spec=spec, models=models, **page)

    def layer(self, name: str, layer: int, query: LayerQuery, links: Links) -> str:
        self.check_layer(name, layer)
        _, tables = self.model(name)
        page = layer_page(tables, layer, query)
        scores = histogram(page.scores.with_columns(layer=layer))
        return self._render(
            "layer.html",
            links,
            model=name,
            page=page,
            layers=self.layers(name),
            chart=charts.score_histograms(scores) if scores.height else None,
        )

    def neuron(
        self,
        name: str,
        layer: int,
        neuron: int,
        links: Links,
        focus: tuple[str, str] | None = None,
    ) -> str:
        self.check_layer(name, layer)
        _, tables = self.model(name)
        page = neuron_page(tables, layer, neuron, focus)
        return self._render("neuron.html", links, model=name, page=page)

    def search(self, name: str, text: str, links: Links) -> str:
        _, tables = self.model(name)
        hits = search_explanations(tables, text)
        return self._render("search.html", links, model=name, text=text, hits=hits)

    def error(
        self,
        links: Links,
        *,
        status: int,
        heading: str,
        message: str,
        command: str | None = None,
        model: str | None = None,
    ) -> str:
        return self._render(
            "error.html",
            links,
            status=status,
            heading=heading,
            message=message,
            command=command,
            model=model if model in self.settings.models else None,
        )
