"""The user's scenario: explain with A, switch to B, refresh only what depends on the explainer,
keep A's results beside B's, switch back to A at no LLM cost."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from autointerp.storage.delta import read_table
from autointerp.testing.llm_server import CHAT_PATH, LLMServer
from pipelines.cli import main
from tests.conftest import statuses, write_config, write_text_corpus

SCRIPTED = """
[pipeline]
explainers = ["{active}"]
simulators = ["lexical-baseline"]

[explainers.token-statistics-baseline]
kind = "baseline"

[explainers.scripted]
kind = "llm"
model = "scripted-explainer"
base_url = "{url}"
api_key_env = "SCRIPTED_API_KEY"
n = 1
max_tokens = 30
neuron_sample = "all"

[simulators.lexical-baseline]
kind = "baseline"
method = "lexical-baseline"

[revisions]
rounds = 0  # revision rounds have their own test (test_revision_assets.py)
"""


def explainer_reply(_received) -> str:
    return ' the word "king" and "queen".'


@pytest.fixture
def scenario(tmp_path, tiny_model_dir, monkeypatch):
    corpus = write_text_corpus(tmp_path / "corpus")
    config = tmp_path / "autointerp.toml"
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SCRIPTED_API_KEY", "sk-test-secret-key-123")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with LLMServer(explainer_reply) as server:

        def use(active: str) -> None:
            extra = SCRIPTED.format(active=active, url=server.url)
            write_config(config, tiny_model_dir, corpus, extra=extra)

        yield use, server, tmp_path / "home"


def materialized_assets(home, since_run_ids: set[str]) -> set[str]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        names = set()
        for run in instance.get_runs():
            if run.run_id in since_run_ids:
                continue
            for record in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records:
                names.add(record.event_log_entry.dagster_event.asset_key.path[-1])
        return names


def run_ids(home) -> set[str]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        return {run.run_id for run in instance.get_runs()}


def test_switching_explainers_recomputes_only_what_depends_on_them(scenario, capsys):
    use, server, home = scenario
    use("token-statistics-baseline")
    main(["run", "--layers", "0-1", "--excerpts", "60"])
    fresh = statuses(home)
    assert all(v == "FRESH" for per in fresh.values() for v in per.values()), fresh

    # Nothing changed: refresh recomputes nothing.
    before = run_ids(home)
    main(["refresh"])
    assert run_ids(home) == before
    assert "out of date" not in capsys.readouterr().out

    # Rerunning one layer (a run of its own, where the first covered both) writes the same
    # rows: their data versions stay, and nothing downstream turns stale.
    main(["run", "--layers", "1", "--excerpts", "60"])
    assert statuses(home) == fresh
    before = run_ids(home)
    main(["refresh"])
    assert run_ids(home) == before

    # Switch to explainer B: explanations turn unsynced for every layer; activations stay in sync.
    use("scripted")
    status = statuses(home)
    assert status["explanations"] == {"0": "STALE", "1": "STALE"}
    for name in ("corpus", "neuron_records", "top_k_excerpts"):
        assert set(status[name].values()) == {"FRESH"}, name
    before = run_ids(home)
    main(["refresh"])
    out = capsys.readouterr().out
    assert (
        "out of date tiny/explainer_calls, tiny/explanations: layers 0, 1 (code version changed)"
        in out
    )
    assert "out of date tiny/scores: layers 0, 1 (code version changed)" in out
    # The summary follows what it reads: scores, the floor, and the explanations and
    # simulations whose dropped neurons it counts.
    (summary,) = [x for x in out.splitlines() if x.startswith("out of date tiny/score_summary")]
    assert summary.startswith("out of date tiny/score_summary: follows ") and all(
        f"tiny/{name}" in summary for name in ("scores", "shuffled_scores")
    )
    assert "skipped tiny/neuron_records: in sync" in out
    touched = materialized_assets(home, before)
    assert touched == {
        "explanations",
        "explainer_calls",
        "simulations",
        "simulator_calls",
        "shuffled_scores",
        "scores",
        "score_summary",
        "compare",
    }
    assert server.count(CHAT_PATH) == 2 * 64  # one call per neuron of both layers
    assert all(v == "FRESH" for per in statuses(home).values() for v in per.values())

    # A's and B's results live side by side.
    scores = read_table(str(home / "delta/tiny/scores"))
    assert set(scores["explainer"]) == {"token-statistics-baseline", "scripted"}
    summary = read_table(str(home / "delta/tiny/score_summary"))
    assert set(summary["explainer"]) == {"token-statistics-baseline", "scripted"}
    calls = read_table(str(home / "delta/tiny/explainer_calls"))
    assert calls.height == 2 * 64 and "sk-test-secret-key-123" not in str(calls.to_dicts())

    # Back to A, then to B again: no LLM call is repeated (the response cache), A's rows return.
    use("token-statistics-baseline")
    main(["refresh"])
    use("scripted")
    main(["refresh"])
    assert server.count(CHAT_PATH) == 2 * 64
    explanations = read_table(str(home / "delta/tiny/explanations"))
    per_explainer = explanations.group_by("explainer").len().sort("explainer")
    assert per_explainer["len"].to_list() == [64 * 2, 64 * 2]

    # The comparison of A and B, and the lineage of one of B's scores, from the stored tables.
    capsys.readouterr()
    main(["compare"])
    out = capsys.readouterr().out
    assert "scripted" in out and "token-statistics-baseline" in out
    calls_before = server.count(CHAT_PATH)
    main(["lineage", "--layer", "1", "--neuron", "5", "--explainer", "scripted", "--json"])
    chain = json.loads(capsys.readouterr().out)
    text = json.dumps(chain)
    assert 'the word \\"king\\" and \\"queen\\"' in text  # the explanation, as written
    assert "the main thing this neuron does is find" in text  # the prompt as sent
    assert "sk-test-secret-key-123" not in text
    assert server.count(CHAT_PATH) == calls_before  # shown from tables, no call repeated


def test_score_rows_carry_their_lineage(scenario):
    use, _server, home = scenario
    use("token-statistics-baseline")
    main(["run", "--layers", "0", "--excerpts", "60"])
    scores = read_table(str(home / "delta/tiny/scores"))
    row = scores.filter(pl.col("scored_on") == "top_and_random").row(0, named=True)
    assert row["explanation_id"].startswith(f"0/{row['neuron']}/token-statistics-baseline@")
    assert row["simulation_id"].startswith(row["explanation_id"] + "/lexical-baseline@")
    for column in (
        "neuron_records_version",
        "top_k_excerpts_version",
        "explanations_version",
        "simulations_version",
    ):
        assert row[column] == 0, column
    assert row["dagster_run_id"] and row["code_version"].startswith("scores-")
    assert len(row["excerpt_ids"]) == 4  # top_k=8, random_k=6: 2 top + 2 random per split


def test_refresh_leaves_layers_never_captured_alone(scenario, capsys):
    use, _server, home = scenario
    use("token-statistics-baseline")
    main(["run", "--layers", "0", "--excerpts", "60"])
    before = run_ids(home)
    main(["refresh"])
    assert run_ids(home) == before
    assert "out of date" not in capsys.readouterr().out
    assert statuses(home)["neuron_records"] == {"0": "FRESH", "1": "MISSING"}
