"""Revision rounds as assets: materialized by `autointerp run`, unsynced only by their settings."""

from __future__ import annotations

import json

from autointerp.storage.delta import read_table
from pipelines.cli import main
from tests.conftest import statuses, write_config, write_text_corpus


def test_rounds_are_assets_and_only_their_settings_unsync_them(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    corpus = write_text_corpus(tmp_path / "corpus")
    config = tmp_path / "autointerp.toml"
    home = tmp_path / "home"
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(home))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    def configure(rounds: int, n_texts: int = 5) -> None:
        extra = f'[revisions]\nrounds = {rounds}\nneuron_sample = "first:6"\nn_texts = {n_texts}\n'
        write_config(config, tiny_model_dir, corpus, extra=extra)

    configure(rounds=2)
    main(["run", "--layers", "0-1", "--excerpts", "60"])
    assert "revision rounds" in capsys.readouterr().out
    r1 = read_table(str(home / "delta/tiny/revised_explanations_r1"))
    r2 = read_table(str(home / "delta/tiny/revised_explanations_r2"))
    assert r1.height == r2.height == 2 * 6  # first:6 per layer
    assert set(r1["round"]) == {1} and set(r2["round"]) == {2}
    # Round 2 starts from what round 1 carried forward.
    joined = r1.join(r2, on=["layer", "neuron"], suffix="_r2")
    assert (joined["explanation"] == joined["previous_explanation_r2"]).all()
    counter = read_table(str(home / "delta/tiny/counterexamples_r1"))
    assert set(counter["source"]) <= {"generated", "mined"} and counter.height > 0
    summary = read_table(str(home / "delta/tiny/revision_summary"))
    assert sorted(summary.select("layer", "round").rows()) == [(0, 1), (0, 2), (1, 1), (1, 2)]

    # The lineage of a revised neuron shows its rounds and the counterexamples behind them.
    capsys.readouterr()
    main(["lineage", "--layer", "1", "--neuron", "2", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in document["revisions"]] == [1, 2]
    first = document["revisions"][0]
    assert first["previous_explanation"] and first["counterexamples"]
    main(["lineage", "--layer", "1", "--neuron", "2"])
    assert "Revision rounds" in capsys.readouterr().out

    # A third round: only the new round and the summary need work; nothing upstream changes.
    configure(rounds=3)
    status = statuses(home)
    assert set(status["revised_explanations_r3"].values()) == {"MISSING"}
    assert status["revision_summary"] == {"None": "STALE"}
    for name in ("explanations", "scores", "revised_explanations_r1", "neuron_records"):
        assert set(status[name].values()) == {"FRESH"}, name

    # Changing a revision setting unsyncs the rounds, never the explanations or scores.
    configure(rounds=2, n_texts=3)
    status = statuses(home)
    assert set(status["revised_explanations_r1"].values()) == {"STALE"}
    assert set(status["explanations"].values()) == {"FRESH"}
    main(["refresh"])
    out = capsys.readouterr().out
    assert "out of date tiny/counterexamples_r1" in out
    assert "skipped tiny/explainer_calls, tiny/explanations: in sync" in out
    assert all(v == "FRESH" for per in statuses(home).values() for v in per.values())
