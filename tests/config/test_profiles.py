"""Explainer and simulator profiles: the shipped configuration, defaults, and clear errors."""

from __future__ import annotations

import tomllib

import pytest

from autointerp.config.profiles import (
    LLM_NEURON_SAMPLE,
    explainer_profile,
    load_profiles,
    simulator_profile,
)
from autointerp.config.settings import DEFAULT_CONFIG, load_settings
from autointerp.errors import ConfigError
from autointerp.llm.endpoint import Endpoint
from autointerp.simulate.simulator_prompt import ALL_AT_ONCE, CHAT_LOGPROBS

LOCAL = {"kind": "llm", "model": "m", "base_url": "http://127.0.0.1:9/v1"}


def test_shipped_configuration_declares_the_ready_made_profiles():
    profiles = load_profiles(tomllib.loads(DEFAULT_CONFIG.read_text()))
    assert profiles.active_explainers == ["token-statistics-baseline"]
    assert profiles.active_simulators == ["lexical-baseline"]
    assert profiles.max_error_fraction == 0.2
    openai = profiles.explainer("gpt-4o-mini")
    assert openai.endpoint() == Endpoint(
        model="gpt-4o-mini",
        api_key_env="OPENAI_API_KEY",
        max_concurrency=16,
        prompt_price_per_m=0.15,
        completion_price_per_m=0.60,
    )
    assert openai.neuron_sample == "first:50" and openai.n == 5
    local = profiles.explainer("local-llama-cpp")
    assert local.base_url == "http://127.0.0.1:8080/v1" and local.api_key_env is None
    assert profiles.simulator("gpt-4o-mini-logprobs").method == CHAT_LOGPROBS
    assert profiles.simulator("local-all-at-once").method == ALL_AT_ONCE
    # llama-cpp-python serves one request at a time: more in flight only queue to the timeout.
    assert local.max_concurrency == 1
    assert profiles.simulator("local-all-at-once").max_concurrency == 1


def test_settings_carry_profiles_and_baselines_need_no_sections(tmp_path):
    config = tmp_path / "autointerp.toml"
    config.write_text('[explainers.mine]\nkind = "llm"\nmodel = "m"\nbase_url = "http://h/v1"\n')
    profiles = load_settings(config, home=tmp_path / "home").profiles
    assert set(profiles.explainers) == {"token-statistics-baseline", "mine"}
    assert set(profiles.simulators) == {"lexical-baseline"}
    assert profiles.explainer("mine").neuron_sample == LLM_NEURON_SAMPLE
    assert profiles.explainer("token-statistics-baseline").neuron_sample == "all"
    config.write_text('[pipeline]\nexplainers = ["missing"]\n')
    with pytest.raises(ConfigError, match="unknown explainer profile 'missing'"):
        load_settings(config, home=tmp_path / "home")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "gpt"}, "kind must be one of"),
        ({"kind": "baseline", "model": "m"}, r"baseline and takes only.*'model'"),
        ({"kind": "llm"}, "needs a model"),
        ({"kind": "llm", "model": "gpt-4o"}, "calls OpenAI.*api_key_env"),
        (LOCAL | {"temprature": 0.5}, r"unknown keys \['temprature'\]"),
        (LOCAL | {"n": "5"}, r"^\[explainers.x\] n = '5': a whole number$"),
        (LOCAL | {"n": True}, r"n = True: a whole number"),
        (LOCAL | {"n": 0}, r"n = 0: a whole number >= 1"),
        (LOCAL | {"top_p": 0}, r"top_p = 0: a number above 0, at most 1"),
        (LOCAL | {"prompt": "reference-v9"}, r"prompt = 'reference-v9': one of"),
        (LOCAL | {"few_shot": "mine"}, "unknown few-shot set 'mine'"),
        (LOCAL | {"neuron_sample": "some"}, r"neuron_sample = 'some': all, first:N"),
        (LOCAL | {"neuron_sample": "random:10"}, "random:N:SEED"),
        (LOCAL | {"max_concurrency": 0}, "max_concurrency"),
        (LOCAL | {"max_prompt_tokens": 0}, "max_prompt_tokens"),
        ("gpt-4o", "must be a table"),
    ],
)
def test_explainer_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        explainer_profile("x", raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "baseline", "method": "chat_logprobs"}, "method must be one of"),
        (LOCAL | {"method": "lexical-baseline"}, "method must be one of"),
        (LOCAL | {"method": "one_at_a_time"}, "method must be one of"),
        (LOCAL, "method must be one of"),
        (
            LOCAL | {"method": "chat_logprobs", "calibration": "yes"},
            r"calibration = 'yes': true or false",
        ),
        (LOCAL | {"method": "chat_logprobs", "timeout_s": -1.0}, "timeout_s"),
    ],
)
def test_simulator_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        simulator_profile("x", raw)


def test_an_api_key_in_the_configuration_is_refused_without_repeating_it():
    with pytest.raises(ConfigError, match="api_key_env") as error:
        explainer_profile("x", LOCAL | {"api_key": "sk-secret-value-1234"})
    assert "sk-secret" not in str(error.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"pipeline": {"simulators": ["nope"]}}, "unknown simulator profile 'nope'"),
        ({"pipeline": {"explainers": "token-statistics-baseline"}}, "must be a list"),
        ({"pipeline": {"max_error_fraction": 1.5}}, "max_error_fraction"),
        ({"pipeline": {"max_errors": 3}}, "unknown keys"),
        ({"explainers": []}, r"\[explainers\] must be a table"),
    ],
)
def test_pipeline_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        load_profiles(raw)


def test_methods_may_be_written_either_way_and_baselines_have_no_endpoint():
    assert simulator_profile("x", LOCAL | {"method": "all-at-once"}).method == ALL_AT_ONCE
    assert simulator_profile("x", LOCAL | {"method": "all_at_once"}).method == ALL_AT_ONCE
    baseline = load_profiles({}).simulator("lexical-baseline")
    with pytest.raises(ConfigError, match="calls no endpoint"):
        baseline.endpoint()
