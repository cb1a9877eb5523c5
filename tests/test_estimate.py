"""`autointerp estimate` against the calls a real run makes: a whole-model run of the tiny model
with LLM profiles against the scripted server, counted request by request."""

from __future__ import annotations

import dagster as dg
import pytest

from autointerp.config.settings import load_settings
from autointerp.estimate import estimate
from autointerp.explain.explainer_prompt import EXPLAINER_SYSTEM_MESSAGE
from autointerp.explain.prompt_format import estimate_tokens
from autointerp.testing.llm_server import Answer, LLMServer, chat_simulator_handler
from pipelines.cli import main
from tests.conftest import write_config, write_text_corpus

PROFILES = """
[pipeline]
explainers = ["scripted"]
simulators = ["scripted-logprobs"]

[explainers.scripted]
kind = "llm"
model = "m"
base_url = "{url}"
n = 2
max_tokens = 30
neuron_sample = "first:5"
prompt_price_per_m = 0.15
completion_price_per_m = 0.60

[simulators.scripted-logprobs]
kind = "llm"
method = "chat_logprobs"
model = "m"
base_url = "{url}"
prompt_price_per_m = 0.15
completion_price_per_m = 0.60

[summaries]
floor_sample = "first:4"

[revisions]
rounds = 0
"""


def handler():
    simulate = chat_simulator_handler()

    def answer(received):
        if received.body["messages"][0]["content"] == EXPLAINER_SYSTEM_MESSAGE:
            return Answer([" the word king."] * received.body.get("n", 1))
        return simulate(received)

    return answer


def counted_calls(home) -> dict[str, int]:
    """The calls each stage of every run made (cache hits included), from the metadata of the
    materializations of its call audits."""
    counted = {"explain": 0, "simulate": 0, "chance floor": 0}
    fields = {
        "explainer_calls": [("explain", "llm_calls")],
        "simulator_calls": [("simulate", "llm_calls"), ("chance floor", "floor_llm_calls")],
    }
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for asset, wanted in fields.items():
            for record in instance.fetch_materializations(
                dg.AssetKey(["tiny", asset]), limit=100
            ).records:
                metadata = record.asset_materialization.metadata
                for stage, key in wanted:
                    counted[stage] += metadata[key].value
    return counted


@pytest.fixture
def counted_run(tmp_path, tiny_model_dir, monkeypatch):
    """A run of every layer of the tiny model: the requests the server received, the calls
    each stage made, and the settings."""
    corpus = write_text_corpus(tmp_path / "corpus")
    config = tmp_path / "autointerp.toml"
    monkeypatch.setenv("AUTOINTERP_CONFIG", str(config))
    monkeypatch.setenv("AUTOINTERP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with LLMServer(handler()) as server:
        write_config(config, tiny_model_dir, corpus, extra=PROFILES.format(url=server.url))
        main(["run", "--excerpts", "60"])
        yield server.requests, counted_calls(tmp_path / "home"), load_settings()


def test_the_estimate_counts_the_calls_of_a_real_run(counted_run, capsys):
    requests, counted, settings = counted_run
    profiles = settings.profiles
    result = estimate(
        model="tiny",
        layers=2,
        neurons_per_layer=64,
        excerpt_tokens=settings.corpus.excerpt_tokens,
        records=settings.records,
        explainer=profiles.explainer("scripted"),
        simulator=profiles.simulator("scripted-logprobs"),
        floor_sample=settings.summaries.floor_sample,
    )
    # 5 neurons per layer explained; 2 samples x 12 scoring excerpts each; floor: 4 x 4 test.
    assert (
        {s.stage: s.calls for s in result.stages}
        == counted
        == {
            "explain": 2 * 5,
            "simulate": 2 * 5 * 2 * 12,
            "chance floor": 2 * 4 * 4,
        }
    )
    # Identical requests are answered by the response cache: the endpoint saw no more.
    assert len(requests) <= result.calls

    # Prompt tokens per call as the same counter reads the prompts sent: placeholder text
    # stands in for the corpus's words, so the estimate is close, not exact.
    stages = {s.stage: s for s in result.stages}
    explainer = [
        r for r in requests if r.body["messages"][0]["content"] == EXPLAINER_SYSTEM_MESSAGE
    ]
    simulator = [r for r in requests if r not in explainer]
    for stage, sent in (("explain", explainer), ("simulate", simulator)):
        counted_tokens = [
            estimate_tokens("".join(m["content"] for m in r.body["messages"])) for r in sent
        ]
        per_call = stages[stage].prompt_tokens / stages[stage].calls
        mean = sum(counted_tokens) / len(counted_tokens)
        assert abs(per_call - mean) <= 0.05 * mean, (stage, per_call, mean)
    assert 0 < result.cacheable_share < 1
    assert result.cost_usd == pytest.approx(
        (result.prompt_tokens * 0.15 + result.completion_tokens * 0.60) / 1e6
    )

    # The command prints the same totals for the whole model, and hours at the rate limit.
    capsys.readouterr()
    main(["estimate", "--rate-limit", "60"])
    out = capsys.readouterr().out
    assert f"total: {result.calls:,} calls" in out
    assert f"{result.calls / 60 / 60:,.1f} hours at 60 requests/min" in out
    # Every neuron, counted without loading the model, at a token rate limit too.
    main(["estimate", "--neuron-sample", "all", "--neurons-per-layer", "64"])
    out = capsys.readouterr().out
    assert "2 layers x 64 neurons" in out and " 128 " in out  # explain: one call per neuron
    main(["estimate", "--tokens-per-minute", "1000"])
    assert "hours at 500 requests/min, 1000 tokens/min" in capsys.readouterr().out
