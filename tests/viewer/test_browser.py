"""The viewer in a real browser (Debian's Chromium through Playwright) against `autointerp view` on
a free loopback port over a small real run: a user's path from the overview to a revision round,
hostile corpus and LLM text shown and never run, and the answers to bad URLs. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import urllib.error
import urllib.request

import polars as pl
import pytest

from autointerp.storage.delta import read_table
from tests.viewer.conftest import SECRET

VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture
def page(browser):
    """A fresh page that records script errors, console errors and dialogs."""
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    opened.problems = []
    opened.on("pageerror", lambda error: opened.problems.append(f"pageerror: {error}"))
    opened.on(
        "console",
        lambda m: opened.problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    opened.on("dialog", lambda d: (opened.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield opened
    context.close()


def test_from_the_overview_to_a_neuron_a_search_and_a_revision_round(page, viewer_url, artifacts):
    page.goto(viewer_url + "/")
    page.get_by_role("link", name="tiny", exact=True).click()
    page.wait_for_url("**/m/tiny")
    page.wait_for_selector(".chart svg")  # Vega drew the plots
    assert page.locator("#pairs").inner_text().count("lexical-baseline") == 2
    page.screenshot(path=artifacts / "viewer-overview.png", full_page=True)

    page.locator("#layers").get_by_role("link", name="layer 0").click()
    page.wait_for_url("**/m/tiny/l/0")
    page.locator("#neurons th").get_by_role("link", name="score").click()
    page.wait_for_url("**/l/0?sort=score")
    shown = page.locator("#neurons td.score").all_inner_texts()
    scores = [float(s) for s in shown if s not in ("", "n/a")]  # undefined scores come last
    assert len(scores) > 10 and scores == sorted(scores, reverse=True)
    page.screenshot(path=artifacts / "viewer-layer-by-score.png")

    top = page.locator("#neurons tbody tr").first
    pair = top.locator("td").nth(2).inner_text()
    neuron = top.locator("a.neuron-link").inner_text()
    top.locator("a.neuron-link").click()
    page.wait_for_url(f"**/m/tiny/l/0/n/{neuron}")
    cells = page.locator("#excerpts .tokens span")
    assert cells.count() > 100
    assert page.locator("#excerpts .tokens span.a9").count() >= 1  # each top excerpt's peak
    predicted = page.locator(".excerpt.simulated .tokens span[class*='s']")
    assert predicted.count() >= 1
    predicted.first.hover()  # the numbers behind a cell's colours
    assert "activation" in predicted.first.get_attribute("title")
    assert "simulated" in predicted.first.get_attribute("title")
    group = page.locator("article.group", has=page.locator("h3", has_text=pair))
    chosen = group.locator(".sample.chosen")
    assert chosen.locator("table.scores td.num").count() == 9
    test_score = chosen.locator("table.scores tr", has_text="test").locator("td").last.inner_text()
    assert scores[0] == pytest.approx(float(test_score.split()[0]), abs=1e-3)
    page.screenshot(path=artifacts / "viewer-neuron.png", full_page=True)

    explanation = chosen.locator(".explanation bdi").inner_text()
    word = next(w.strip('",()') for w in explanation.split()[2:] if w.strip('",()').isalpha())
    page.get_by_role("searchbox", name="search explanations").fill(word)
    page.get_by_role("button", name="search").click()
    page.wait_for_url("**/m/tiny/search?q=*")
    assert page.locator("#hits mark").first.inner_text().lower() == word.lower()
    page.locator("#hits a.hit", has_text=f"0/{neuron}").first.click()
    page.wait_for_url(f"**/m/tiny/l/0/n/{neuron}")

    page.goto(viewer_url + "/m/tiny/l/0")
    page.locator("form.filters select[name=status]").select_option("revised")
    page.get_by_role("button", name="filter").click()
    page.wait_for_url("**status=revised*")
    page.locator("#neurons a.neuron-link").first.click()
    page.locator("a.round-link", has_text="round 1").click()
    page.wait_for_url("**#round-1")
    round_one = page.locator("#round-1")
    assert round_one.is_visible() and round_one.get_attribute("open") is not None
    assert round_one.locator(".counterexample .tokens span").count() > 0
    assert (
        round_one.locator(".counterexample .meta")
        .first.inner_text()
        .startswith(("generated", "mined"))
    )
    page.screenshot(path=artifacts / "viewer-revision-round.png")
    assert page.problems == []


def hostile_neuron(viewer_run) -> int:
    """A neuron of layer 0 whose top excerpts hold hostile corpus text."""
    corpus = read_table(f"{viewer_run.root}/corpus")
    hostile = corpus.filter(pl.col("text").str.contains("pwned", literal=True))["excerpt_id"]
    records = read_table(f"{viewer_run.root}/neuron_records").filter(pl.col("layer") == 0)
    for neuron, ids in records.select("neuron", "top_excerpt_ids").iter_rows():
        if set(hostile) & set(ids):
            return neuron
    raise AssertionError("no neuron of layer 0 has hostile text among its top excerpts")


def test_hostile_text_is_shown_as_text_and_never_runs(page, viewer_url, viewer_run, artifacts):
    llm, corpus = "/m/tiny/l/0/n/0", f"/m/tiny/l/0/n/{hostile_neuron(viewer_run)}"
    paths = [
        llm,
        corpus,
        "/m/tiny/l/0?explainer=scripted",
        "/m/tiny/search?q=%3Cscript%3E",
        "/m/tiny/search?q=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
    ]
    for i, path in enumerate(paths):
        page.goto(viewer_url + path)
        for token in page.locator(".tokens span").all()[:40]:
            token.hover()
        state = page.evaluate(
            """() => ({
                pwned: window.__pwned ?? null,
                images: document.images.length,
                javascriptLinks: document.querySelectorAll('a[href^="javascript:"]').length,
                inlineScripts: [...document.scripts].filter(
                    (s) => !s.src && s.type !== "application/json").length,
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                barTop: document.querySelector("header.bar").getBoundingClientRect().top,
                html: document.documentElement.outerHTML,
                text: document.body.innerText,
                tokens: [...document.querySelectorAll(".tokens")].map((t) => t.innerText).join(""),
            })"""
        )
        assert state["pwned"] is None and state["images"] == 0, path
        assert state["javascriptLinks"] == 0 and state["inlineScripts"] == 0, path
        assert state["overflow"] <= 0 and state["barTop"] == 0, path  # the layout holds
        assert SECRET not in state["html"], path
        if path in (llm, paths[2]):
            # Markup is shown as the text it is; control characters as visible symbols.
            assert "<script>window.__pwned=11</script>" in state["text"], path
            assert "␛[31mred␛[0m" in state["text"] and "⟨U+202E⟩evil" in state["text"], path
            assert "[click](javascript:window.__pwned=13) **bold**" in state["text"], path
        if path == corpus:
            assert "pwned" in state["tokens"]  # the corpus's markup, as tokens
        page.screenshot(path=artifacts / f"viewer-hostile-{i}.png")
    page.goto(viewer_url + llm)
    page.locator("details.lineage summary").first.click()
    page.locator("details.call summary").first.click()
    assert page.locator("pre.prompt").first.is_visible()
    completion = page.locator("pre.completion").first.inner_text()
    assert "<img src=x onerror=" in completion and "␀" in completion
    page.screenshot(path=artifacts / "viewer-hostile-prompt.png")
    assert page.evaluate("window.__pwned ?? null") is None
    assert page.problems == []


def fetch(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/m/nope", 404, "the models declared are: hub-only, tiny"),
        ("/m/tiny/l/9", 404, "tiny has no layer 9: its layers are 0-1"),
        ("/m/tiny/l/1/n/640", 404, "neuron 640 is not in layer 1: it has neurons 0-63"),
        ("/m/hub-only", 404, "autointerp run --model hub-only"),
        ("/m/hub-only/l/3", 404, "autointerp run --model hub-only --layers 3"),
        ("/m/tiny/l/0?sort=nonsense", 400, "sort by one of neuron, score"),
        ("/somewhere/else", 404, "pages are /m/&lt;model&gt;"),
    ],
)
def test_bad_urls_get_a_page_that_says_what_exists(viewer_url, path, status, says):
    got, html, headers = fetch(viewer_url + path)
    assert got == status and says in html
    assert "script-src 'self'" in headers["content-security-policy"]


def test_the_server_listens_on_loopback_only(viewer_url):
    port = int(viewer_url.rsplit(":", 1)[1])
    listening = set()
    with open("/proc/net/tcp") as sockets:
        lines = sockets.read().splitlines()[1:]
    for line in lines:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
            listening.add(address)
    assert listening == {"0100007F"}  # 127.0.0.1
