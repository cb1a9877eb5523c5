"""The viewer's pages over a real run of the tiny model: what each shows, the answers to bad input,
and the static copy; rendered in-process (the browser tests drive the server)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from autointerp.config.settings import StorageSpec
from autointerp.errors import InputError
from autointerp.storage.delta import read_table, write_partitions
from autointerp.viewer.errors import NotFoundError
from autointerp.viewer.layer import LayerQuery, layer_page
from autointerp.viewer.neuron import neuron_page
from autointerp.viewer.pages import Links, Site
from autointerp.viewer.search import search_explanations
from autointerp.viewer.tables import MissingTableError
from tests.viewer.conftest import SECRET

LINKS = Links()


@pytest.fixture(scope="module")
def site(viewer_run) -> Site:
    return Site(viewer_run.settings)


def table(viewer_run, name: str) -> pl.DataFrame:
    return read_table(f"{viewer_run.root}/{name}")


def test_the_run_ends_by_naming_the_viewer_command_and_url(viewer_run):
    assert "autointerp view --model tiny" in viewer_run.output
    assert "http://127.0.0.1:8765/m/tiny" in viewer_run.output


def test_the_layer_table_sorts_filters_and_pages(site, viewer_run):
    _, tables = site.model("tiny")
    everything = layer_page(tables, 0, LayerQuery(page_size=None))
    # Every neuron, once per explainer that explained it (the scripted LLM explained 8).
    assert everything.neurons == 64 and everything.matching == 64 + 8
    assert set(everything.rows["explainer"]) == {"token-statistics-baseline", "scripted"}

    by_score = layer_page(tables, 0, LayerQuery(sort="score", descending=True, page_size=10))
    scores = by_score.rows["score"].drop_nulls().to_list()
    assert scores == sorted(scores, reverse=True) and by_score.pages == 8
    best = table(viewer_run, "scores").filter(
        pl.col("layer") == 0, pl.col("split") == "test", pl.col("scored_on") == "top_and_random"
    )
    assert scores[0] == pytest.approx(best["ev_correlation"].fill_nan(None).max())

    second = layer_page(tables, 0, LayerQuery(page=2, page_size=10))
    assert second.rows["neuron"].to_list()[0] > everything.rows["neuron"].to_list()[0]
    revised = layer_page(tables, 0, LayerQuery(status="revised", page_size=None))
    assert set(revised.rows["neuron"]) == set(range(8))  # neuron_sample first:8
    scripted = layer_page(tables, 0, LayerQuery(explainer="scripted", page_size=None))
    assert scripted.matching == 8
    word = everything.rows.filter(pl.col("explainer") != "scripted")["explanation"][0].split()[1]
    found = layer_page(tables, 0, LayerQuery(text=word.upper(), page_size=None))
    assert found.matching and all(word in e.lower() for e in found.rows["explanation"])
    with pytest.raises(InputError, match="sort by one of"):
        LayerQuery.parse({"sort": "nonsense"})


def test_the_neuron_page_holds_the_evidence_behind_each_explanation(site, viewer_run):
    _, tables = site.model("tiny")
    page = neuron_page(tables, 1, 3)
    records = table(viewer_run, "neuron_records").filter(
        pl.col("layer") == 1, pl.col("neuron") == 3
    )
    assert [e.excerpt_id for e in page.top] == records["top_excerpt_ids"][0].to_list()
    assert page.top[0].activations == pytest.approx(records["top_activations"][0][0].to_list())
    assert len(page.random) == 6 and len(page.bands) == 4 and page.revisions
    assert [q for q, _ in page.boundaries] == [0.0, 0.5, 0.9, 0.99, 0.999]
    assert {(g.explainer, g.simulator) for g in page.groups} == {
        ("scripted", "lexical-baseline"),
        ("token-statistics-baseline", "lexical-baseline"),
    }
    # The best-scoring pair's chosen sample is drawn on the scored excerpts, never on train ones.
    scores = {
        g.explainer: s.scores[("test", "top_and_random")].ev_correlation or -1
        for g in page.groups
        for s in g.samples
        if s.chosen
    }
    assert page.focus == (max(scores, key=scores.get), "lexical-baseline")
    scored = ("calibration", "valid", "test")
    for excerpt in page.top:
        assert (excerpt.simulated is not None) == (excerpt.split in scored)
    scripted = next(g for g in page.groups if g.explainer == "scripted").samples[0]
    assert scripted.chosen and scripted.scores[("test", "top_and_random")].excerpts == 4
    [call] = scripted.calls  # the prompt as sent and the completion
    assert "the main thing this neuron does is find" in call.prompt
    assert "<script>window.__pwned=11" in call.response_texts[0]
    tables_read = {t.table: t for t in scripted.tables}
    assert tables_read["simulations"].recorded and tables_read["simulations"].written_by
    assert tables_read["explanations"].written_by.dagster_run_id == scripted.dagster_run_id
    # Another explainer's simulation can be drawn instead.
    other = neuron_page(tables, 1, 3, focus=("scripted", "lexical-baseline"))
    assert other.focus == ("scripted", "lexical-baseline")


def test_search_finds_words_of_explanations_across_layers(site):
    _, tables = site.model("tiny")
    hits = search_explanations(tables, "window.__PWNED")
    assert {(h.layer, h.explainer) for h in hits} == {(0, "scripted"), (1, "scripted")}
    assert any(matched and piece == "window.__pwned" for piece, matched in hits[0].parts)
    assert search_explanations(tables, "no explanation says this") == []


def test_every_page_renders_and_none_shows_the_api_key(site):
    pages = [
        site.index(LINKS),
        site.overview("tiny", LINKS),
        site.layer("tiny", 0, LayerQuery(), LINKS),
        site.search("tiny", "the", LINKS),
        *(site.neuron("tiny", layer, n, LINKS) for layer in (0, 1) for n in (0, 7, 63)),
    ]
    for html in pages:
        assert SECRET not in html and "sk-test" not in html
    assert "scripted → lexical-baseline" in pages[1]


def test_bad_input_names_what_exists(site):
    with pytest.raises(NotFoundError, match="the models declared are: hub-only, tiny"):
        site.overview("nope", LINKS)
    with pytest.raises(NotFoundError, match="its layers are 0-1"):
        site.layer("tiny", 5, LayerQuery(), LINKS)
    with pytest.raises(NotFoundError, match="it has neurons 0-63"):
        site.neuron("tiny", 0, 64, LINKS)
    # A declared model the graph never ran for: its tables are missing.
    with pytest.raises(MissingTableError) as missing:
        site.overview("hub-only", LINKS)
    assert missing.value.table == "neuron_records"


class Hrefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.found += [v for k, v in attrs if k in ("href", "src") and v]


def test_the_static_copy_links_only_to_files_it_holds(viewer_run, tmp_path):
    export = ["view", "--export", str(tmp_path), "--layers", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *export],
        env=viewer_run.env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {2 + 2 + 64} pages" in done.stdout and "layers 1," in done.stdout
    pages = sorted(tmp_path.rglob("*.html"))
    for page in pages:
        parser = Hrefs()
        parser.feed(page.read_text())
        for href in parser.found:
            if href.startswith(("data:", "#")):
                continue
            assert not href.startswith("/") and "?" not in href, (page, href)
            assert (page.parent / href.split("#")[0]).resolve().is_file(), (page, href)
    neuron = (tmp_path / "m/tiny/l/1/n/5/index.html").read_text()
    assert re.search(r'class="tokens" data-act="', neuron)
    # Layer 0 is not in the copy: the neuron page names it without a link.
    assert "↑ layer 0" in neuron and "../../0/" not in neuron
    assert (tmp_path / "static/vendor/vega.min.js").is_file()
    assert Path(tmp_path / "m/tiny/l/1/by-score/index.html").is_file()


def test_what_the_simulator_missed_and_the_chance_floor_are_shown_where_tables_have_them(
    viewer_run, tmp_path
):
    root = tmp_path / "delta"
    shutil.copytree(viewer_run.settings.delta_root, root)
    settings = replace(viewer_run.settings, storage=StorageSpec(root=str(root)))
    tiny = settings.model_root(settings.model("tiny"))

    def rewrite(layer: int, change) -> None:
        table = f"{tiny}/simulations"
        frame = change(read_table(table, partition_column="layer", partitions=[layer]))
        write_partitions(
            table, frame, partition_column="layer", partitions=[layer], commit_metadata={}
        )

    # Layer 1: the simulator left tokens 0 and 2 unanswered and was cut short. Layer 0: files as a
    # simulations table without those columns wrote them.
    rewrite(
        1,
        lambda f: f.with_columns(
            missing_positions=pl.lit([0, 2], dtype=pl.List(pl.Int32)), truncated=pl.lit(True)
        ),
    )
    newer = ("method", "missing_positions", "sampled_positions", "folded_positions", "truncated")
    rewrite(0, lambda f: f.drop(newer))
    shutil.copytree(tiny, settings.model_root(settings.model("hub-only")))
    site = Site(settings)

    overview = site.overview("tiny", LINKS)
    start = overview.index('id="pairs"')
    pairs = overview[start : overview.index("</table>", start)]
    summary = read_table(f"{tiny}/score_summary").filter(pl.col("shuffled_neurons") > 0)
    assert summary.height  # the run scored a chance floor
    floor = (summary["shuffled_mean"] * summary["shuffled_neurons"]).sum()
    assert f"{floor / summary['shuffled_neurons'].sum():.3f}" in pairs
    assert "unanswered tokens" in pairs
    assert "Subject models side by side" in overview  # hub-only has tables now too
    truncated = site.neuron("tiny", 1, 3, LINKS)
    assert "method " in truncated and "tokens unanswered" in truncated and "truncated" in truncated
    assert re.search(r'<span class="[^"]*\bm\b', truncated)  # unanswered tokens are marked
    older = site.neuron("tiny", 0, 3, LINKS)
    assert "method " not in older and "tokens unanswered" not in older
