"""Settings: every knob reaches what it configures, and only what changes results versions them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from autointerp.config.profiles import explainer_profile, simulator_profile
from autointerp.config.settings import RevisionSpec, StorageSpec, SummarySpec, load_settings
from autointerp.errors import ConfigError
from autointerp.simulate.baseline import LexicalWeights, simulate_lexical


def write(tmp_path, text: str):
    config = tmp_path / "autointerp.toml"
    config.write_text(text)
    return config


def test_the_delta_root_is_configurable_as_a_folder_or_a_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOINTERP_DELTA_ROOT", raising=False)
    home = tmp_path / "home"
    settings = load_settings(write(tmp_path, "[models.m]\npath = 'x'\nnum_layers = 1\n"), home)
    assert settings.delta_root == str(home.resolve() / "delta")
    model = settings.model("m")
    assert settings.table_uri(model, "scores") == f"{home.resolve()}/delta/m/scores"

    text = '[storage]\nroot = "s3://bucket/prefix/"\nstorage_options = { AWS_REGION = "x" }\n'
    settings = load_settings(write(tmp_path, text), home)
    assert settings.delta_root == "s3://bucket/prefix"
    assert settings.storage.storage_options == {"AWS_REGION": "x"}

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOINTERP_DELTA_ROOT", "tables")  # relative: from the working folder
    assert load_settings(write(tmp_path, text), home).delta_root == str(tmp_path / "tables")


def test_storage_options_hold_no_credentials_and_the_cache_can_be_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOINTERP_DELTA_ROOT", raising=False)
    home = tmp_path / "home"
    for key in ("AWS_SECRET_ACCESS_KEY", "aws_session_token", "AZURE_STORAGE_ACCOUNT_KEY"):
        text = f'[storage]\nroot = "s3://b/p"\nstorage_options = {{ {key} = "s3cr3t" }}\n'
        with pytest.raises(ConfigError, match="in the environment") as refused:
            load_settings(write(tmp_path, text), home)
        assert "s3cr3t" not in str(refused.value)
    text = '[storage]\nroot = "s3://b/p"\nllm_cache = "shared"\n'
    settings = load_settings(write(tmp_path, text), home)
    assert settings.shared_llm_cache == "s3://b/p/llm_cache"
    assert load_settings(write(tmp_path, "[storage]\n"), home).shared_llm_cache is None
    with pytest.raises(ConfigError, match="llm_cache"):
        load_settings(write(tmp_path, '[storage]\nllm_cache = "redis"\n'), home)


def test_unknown_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[storage\]"):
        load_settings(write(tmp_path, "[storage]\nbucket = 'x'\n"), tmp_path / "home")
    with pytest.raises(ConfigError, match=r"\[summaries\]"):
        load_settings(write(tmp_path, "[summaries]\nsamples = 3\n"), tmp_path / "home")


def test_revision_knobs_version_results_only_when_they_change_them():
    spec = RevisionSpec()
    assert "texts_per_pass" not in spec.hash_content()
    assert "high_prediction" not in spec.hash_content()  # at its default: earlier rounds stay
    assert replace(spec, texts_per_pass=8).hash_content() == spec.hash_content()
    assert replace(spec, high_prediction=6.0).hash_content()["high_prediction"] == 6.0
    assert replace(spec, n_texts=2).hash_content() != spec.hash_content()
    assert SummarySpec().hash_content() == {}
    assert StorageSpec().root is None


def test_lexical_weights_come_from_the_profile_and_enter_its_hash_when_changed():
    default = simulator_profile("lex", {"kind": "baseline"})
    heavier = simulator_profile("lex", {"kind": "baseline", "word_weight": 6.0})
    assert heavier.lexical_weights() == LexicalWeights(word=6.0)
    assert heavier.hash != default.hash
    assert simulator_profile("lex", {"kind": "baseline", "word_weight": 4.0}).hash == default.hash
    tokens = [" the", " ships", " sail"]
    assert simulate_lexical("ships", tokens, heavier.lexical_weights()) == [0.0, 6.0, 0.0]
    assert simulate_lexical("ships", tokens) == [0.0, 4.0, 0.0]
    with pytest.raises(ConfigError, match="baseline and takes only"):
        explainer_profile("e", {"kind": "baseline", "word_weight": 1.0})


def test_the_retry_policy_is_a_profile_setting_outside_its_hash():
    base = {"kind": "llm", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    patient = explainer_profile("p", base | {"max_attempts": 3, "backoff_cap_s": 2.5})
    endpoint = patient.endpoint()
    assert (endpoint.max_attempts, endpoint.backoff_base_s, endpoint.backoff_cap_s) == (3, 1.0, 2.5)
    assert patient.hash == explainer_profile("p", base).hash
    with pytest.raises(ConfigError, match="max_attempts"):
        explainer_profile("p", base | {"max_attempts": 0})


def test_a_token_list_explainer_needs_the_corpus_wide_token_means(tmp_path):
    profile = (
        '[explainers.tl]\nkind = "llm"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'prompt = "token-list-v1"\n[pipeline]\nexplainers = ["tl"]\n'
    )
    with pytest.raises(ConfigError, match=r"top_mean_tokens = 100 \(it is 0\)"):
        load_settings(write(tmp_path, profile), tmp_path / "home")
    ok = load_settings(write(tmp_path, profile + "[records]\ntop_mean_tokens = 100\n"), tmp_path)
    assert ok.records.top_mean_tokens == 100


def test_a_study_declares_one_subject_model_per_activation(tmp_path):
    text = '[study]\nactivations = ["relu", "swiglu"]\nnum_layers = 3\nsteps = 10\n'
    settings = load_settings(write(tmp_path, text), tmp_path / "home")
    assert list(settings.models) == ["study-relu", "study-swiglu"]
    model = settings.model("study-swiglu")
    assert model.num_layers == 3 and model.key_prefix == "study_swiglu"
    assert model.path == str((tmp_path / "home").resolve() / "models" / "study" / "swiglu")
    # Comparing defaults to the study's models, the first the reference.
    assert settings.comparison.models == ("study-relu", "study-swiglu")
    assert settings.comparison.reference is None
    # What a model's weights depend on: not how it runs, not which other models are trained.
    content = settings.study.training_content()
    assert content["steps"] == 10 and not {"device", "activations", "min_margin"} & set(content)
    assert load_settings(write(tmp_path, ""), tmp_path / "home").study is None


def test_a_study_s_models_clash_with_no_declared_model(tmp_path):
    home = tmp_path / "home"
    clash = '[study]\n[models.study-gelu]\npath = "x"\nnum_layers = 1\n'
    with pytest.raises(ConfigError, match=r"\[models.study-gelu\] clashes"):
        load_settings(write(tmp_path, clash), home)
    with pytest.raises(ConfigError, match=r"\[study\] unknown keys \['layers'\]"):
        load_settings(write(tmp_path, "[study]\nlayers = 3\n"), home)
