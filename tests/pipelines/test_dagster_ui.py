"""The Dagster UI as a user drives it: after a profile change and "Reload definitions" it shows
which layers of which assets are out of date, and the one refresh action recomputes exactly those.

A real `dagster dev -w workspace.yaml` is started on a free loopback port with DAGSTER_HOME under
AUTOINTERP_HOME (as `make ui` does) and driven with Playwright over Debian's Chromium; what it
did is read back through its GraphQL API. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os

import dagster as dg
import pytest
from playwright.sync_api import expect

from assets import model_assets
from autointerp.config.settings import PROJECT_ROOT, load_settings
from autointerp.testing.dagster_dev import DagsterDev
from pipelines.cli import main
from pipelines.refresh import plan_refresh
from pipelines.runs import COMMAND_TAG, REFRESH_RUN_TAG
from tests.conftest import statuses, write_config, write_text_corpus

PROFILES = """
[pipeline]
explainers = ["token-statistics-baseline"]
simulators = ["lexical-baseline"]

[simulators.lexical-baseline]
kind = "baseline"
method = "lexical-baseline"
calibration = {calibration}

[revisions]
rounds = 0
"""

LOCATION = "pipelines.definitions"  # a python_module location is named after its module
LAYERS = ["0", "1"]
# What a simulator change makes out of date: the simulator's own assets in both layers, and the
# summaries that follow from them; never the activations or the explanations.
STALE_ASSETS = ["simulations", "simulator_calls", "shuffled_scores", "scores"]
EXPECTED = {(name, layer) for name in STALE_ASSETS for layer in LAYERS} | {
    ("score_summary", None),
    ("compare", None),
}
SERVER_START_S = 300
WAIT_S = 300

NODES_QUERY = """
{
  assetNodes(group: {groupName: "tiny", repositoryName: "__repository__",
                     repositoryLocationName: "pipelines.definitions"}) {
    assetKey { path }
    isPartitioned
  }
}
"""
# Dagster's own view: per layer for the partitioned assets, one status for the others.
STALE_QUERY = """
query Stale($partitioned: [AssetKeyInput!], $whole: [AssetKeyInput!], $layers: [String!]) {
  partitioned: assetNodes(assetKeys: $partitioned) {
    assetKey { path }
    staleStatusByPartition(partitions: $layers)
  }
  whole: assetNodes(assetKeys: $whole) {
    assetKey { path }
    staleStatus
  }
}
"""
STATUS_QUERY = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results {
        runId
        jobName
        status
        assetMaterializations { assetKey { path } partition }
      }
    }
  }
}
"""


def ui_statuses(dev: DagsterDev) -> dict[str, dict[str, str]]:
    """Each asset's stale status per layer ("None" for an unpartitioned one), read as the UI
    reads it; the same shape as `tests.conftest.statuses`."""
    nodes = dev.graphql(NODES_QUERY)["assetNodes"]
    keys = {
        flag: [{"path": n["assetKey"]["path"]} for n in nodes if n["isPartitioned"] is flag]
        for flag in (True, False)
    }
    data = dev.graphql(
        STALE_QUERY, {"partitioned": keys[True], "whole": keys[False], "layers": LAYERS}
    )
    view = {
        n["assetKey"]["path"][-1]: dict(zip(LAYERS, n["staleStatusByPartition"], strict=True))
        for n in data["partitioned"]
    }
    view.update({n["assetKey"]["path"][-1]: {"None": n["staleStatus"]} for n in data["whole"]})
    return view


def runs(dev: DagsterDev, tags: dict[str, str] | None = None) -> list[dict]:
    flt = {"tags": [{"key": k, "value": v} for k, v in tags.items()]} if tags else {}
    return dev.graphql(RUNS_QUERY, {"filter": flt})["runsOrError"]["results"]


def run_status(dev: DagsterDev, run_id: str) -> str:
    return dev.graphql(STATUS_QUERY, {"id": run_id})["runOrError"]["status"]


def materialized(found: list[dict]) -> set[tuple[str, str | None]]:
    return {
        (m["assetKey"]["path"][-1], m["partition"])
        for run in found
        for m in run["assetMaterializations"]
    }


def check_text(page, base: str, asset: str) -> str:
    """The latest evaluation of an asset's up_to_date check, as its Checks tab shows it."""
    page.goto(f"{base}/assets/tiny/{asset}?view=checks")
    page.get_by_text("up_to_date").first.click()
    page.wait_for_timeout(1500)
    return page.inner_text("body")


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch):
    """A tiny project with two layers materialized by the CLI, and a function to edit its
    simulator profile."""
    corpus = write_text_corpus(tmp_path / "corpus")
    config = tmp_path / "autointerp.toml"
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.delenv("AUTOINTERP_ALLOW_HUB", raising=False)

    def calibrate(on: bool) -> None:
        extra = PROFILES.format(calibration=str(on).lower())
        write_config(config, tiny_model_dir, corpus, extra=extra)

    calibrate(False)
    main(["run", "--layers", "0-1", "--excerpts", "60"])
    return calibrate, home, tmp_path


@pytest.fixture
def dagster_dev(project):
    """`dagster dev` on this project, on a free loopback port, running this checkout's code."""
    _calibrate, _home, tmp_path = project
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    log = tmp_path / "dagster-dev.log"
    with DagsterDev(PROJECT_ROOT, env, log, LOCATION, SERVER_START_S) as dev:
        yield dev


def test_the_ui_shows_what_is_out_of_date_and_refreshes_exactly_that(
    project, dagster_dev, browser, artifacts
):
    calibrate, home, _tmp_path = project
    dev, base = dagster_dev, dagster_dev.url
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    # Dismiss the community sign-up dialog the UI shows on a first visit.
    context.add_init_script("localStorage.setItem('communityNux', JSON.stringify('1'))")
    page = context.new_page()
    page.set_default_timeout(60_000)

    # The two layers the CLI materialized are runs of the code location's job, tagged, and
    # re-executable here.
    [cli_run] = [
        run for run in runs(dev, {COMMAND_TAG: "run"}) if ("scores", "1") in materialized([run])
    ]
    assert cli_run["jobName"] == "tiny_graph"
    page.goto(f"{base}/runs/{cli_run['runId']}")
    expect(page.get_by_role("button", name="Re-execute all")).to_be_enabled(timeout=60_000)
    page.screenshot(path=artifacts / "ui-1-cli-run.png")
    assert all(v == "FRESH" for per in ui_statuses(dev).values() for v in per.values())

    # Calibrating the simulator changes its profile hash. Reload definitions, as a user would.
    calibrate(True)
    page.goto(f"{base}/locations")
    page.get_by_role("button", name="Reload").first.click()
    dev.wait_for(
        lambda: ui_statuses(dev)["simulations"] == {"0": "STALE", "1": "STALE"},
        "simulations unsynced after the reload",
        WAIT_S,
    )
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        settings = load_settings()
        plan = plan_refresh(instance, model_assets(settings, settings.model("tiny")))
    assert {(key.path[-1], p) for key, p in plan.pairs()} == EXPECTED
    assert ui_statuses(dev) == statuses(home)  # the plan reads staleness as Dagster does

    # The UI shows which layers are out of date: each such asset's up_to_date check fails and
    # names them (the sensor that dagster dev's daemon runs reports it within seconds).
    shown = dev.wait_for(
        lambda: (
            (text := check_text(page, base, "simulations"))
            and "out of date: layers 0, 1 (code version changed)" in text
            and text
        ),
        "the failing up_to_date check of simulations",
        WAIT_S,
        every=3,
    )
    assert "Launch the job tiny_refresh" in shown
    page.screenshot(path=artifacts / "ui-2-out-of-date-check.png")
    summary = check_text(page, base, "score_summary")
    assert "out of date: follows tiny/scores, tiny/shuffled_scores" in summary
    assert "in sync" in check_text(page, base, "explanations")

    # The one action: launch the refresh job from its Launchpad.
    page.goto(f"{base}/locations/{LOCATION}/jobs/tiny_refresh/playground")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url("**/runs/**")
    refresh_id = page.url.rstrip("/").split("/")[-1]
    status = dev.wait_for(
        lambda: (
            (found := run_status(dev, refresh_id)) in {"SUCCESS", "FAILURE", "CANCELED"} and found
        ),
        f"the end of refresh run {refresh_id}",
        WAIT_S,
        every=2,
    )
    assert status == "SUCCESS", dev.tail()
    page.reload()
    page.wait_for_timeout(2000)
    page.screenshot(path=artifacts / "ui-3-refresh-run.png")

    # Through GraphQL: the refresh recomputed exactly the planned (asset, layer) pairs, the four
    # assets in one run per layer (memory flat in the layers) and the summaries after them, and
    # nothing else ran.
    children = runs(dev, {REFRESH_RUN_TAG: refresh_id})
    assert materialized(children) == EXPECTED
    assert len(children) == len(LAYERS) + 1 and {run["jobName"] for run in children} == {"tiny_graph"}
    others = {run["runId"] for run in runs(dev)} - {
        run["runId"] for run in runs(dev, {COMMAND_TAG: "run"})
    }
    assert others == {refresh_id, *(run["runId"] for run in children)}
    assert all(v == "FRESH" for per in ui_statuses(dev).values() for v in per.values())
    dev.wait_for(
        lambda: "in sync" in check_text(page, base, "simulations"),
        "the up_to_date check of simulations passing again",
        WAIT_S,
        every=3,
    )
    # Each layer's own metadata, its score histogram drawn from a data URI.
    page.goto(f"{base}/assets/tiny/scores?view=partitions&partition=1")
    for entry in ("count_ge_0_8", "top_neurons", "score_histogram"):
        expect(page.get_by_text(entry, exact=True).first).to_be_visible(timeout=60_000)
    page.screenshot(path=artifacts / "ui-4-scores-layer-1.png")
    context.close()
