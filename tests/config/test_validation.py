"""Every setting is checked before anything runs, each problem in one line that names the section,
the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from autointerp.config.settings import load_settings
from autointerp.errors import ConfigError

MODEL = '[models.m]\npath = "x"\nnum_layers = 2\n'
LLM = 'kind = "llm"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'

CASES = [
    ("records", "top_k", "3", "a whole number (one per split"),
    ("records", "top_k", '"20"', "a whole number"),
    ("records", "random_k", "2", "one per scoring split"),
    ("records", "reference_k", "-1", ">= 0"),
    ("records", "quantile_k", "-1", ">= 0"),
    ("records", "boundary_pool", "0", ">= 1"),
    ("records", "seed", "-1", ">= 0"),
    ("records", "top_mean_tokens", "-5", ">= 0"),
    ("corpus", "source", '"web"', "shakespeare, fortunes, text:PATH"),
    ("corpus", "excerpt_tokens", "0", ">= 1"),
    ("corpus", "max_excerpts", "0", ">= 1"),
    ("corpus", "text_field", '""', "a field name"),
    ("revisions", "rounds", "-1", ">= 0"),
    ("revisions", "neuron_sample", '"some"', "all, first:N or random:N:SEED"),
    ("revisions", "n_texts", "0", ">= 1"),
    ("revisions", "mine_k", "-1", ">= 0"),
    ("revisions", "min_miss", "2.0", "from 0 to 1"),
    ("revisions", "generation_tokens_per_text", "0", ">= 1"),
    ("revisions", "high_prediction", "11", "from 0 to 10"),
    ("revisions", "fired", "1.5", "from 0 to 1"),
    ("revisions", "strong", "-0.1", "from 0 to 1"),
    ("revisions", "min_misfires", "0", ">= 1"),
    ("revisions", "misfire_ratio", "-1", ">= 0"),
    ("revisions", "texts_per_pass", "0", ">= 1"),
    ("revisions", "mine_quantile_samples", '"yes"', "true or false"),
    ("summaries", "bootstrap_samples", "10", ">= 100"),
    ("summaries", "bootstrap_seed", "-1", ">= 0"),
    ("summaries", "floor_sample", '"x"', "all, first:N or random:N:SEED"),
    ("summaries", "floor_seed", "-1", ">= 0"),
    ("storage", "root", "5", "a string"),
    ("storage", "storage_options", "{ a = 1 }", "a table of string values"),
    ("models.m", "num_layers", "0", ">= 1"),
    ("models.m", "batch_size", "0", ">= 1"),
    ("models.m", "context_length", "0", ">= 1"),
    ("models.m", "dtype", '"float64"', "one of 'auto', 'bfloat16'"),
    ("models.m", "device", '"gpu"', "auto, cpu, cuda"),
    ("pipeline", "max_error_fraction", "2", "in [0, 1]"),
    ("explainers.e", "prompt_price_per_m", "-1", ">= 0"),
    ("explainers.e", "completion_price_per_m", "-1", ">= 0"),
    ("explainers.e", "max_attempts", "0", ">= 1"),
    ("explainers.e", "backoff_base_s", "-1", ">= 0"),
    ("explainers.e", "backoff_cap_s", "-1", ">= 0"),
    ("explainers.e", "max_concurrency", "0", ">= 1"),
    ("explainers.e", "timeout_s", "0", "> 0"),
    ("explainers.e", "temperature", "3", "from 0 to 2"),
    ("explainers.e", "max_tokens", "0", ">= 1"),
    ("explainers.e", "max_cues", "0", ">= 1"),
    ("simulators.s", "max_missing_share", "2", "from 0 to 1"),
    ("simulators.s", "quoted_weight", "11", "from 0 to 10"),
    ("study", "activations", '["gelu", "swish"]', "distinct names among gelu, relu"),
    ("study", "activations", '["gelu", "gelu"]', "distinct names"),
    ("study", "activations", "[]", "distinct names"),
    ("study", "vocab_size", "256", "above the 256 bytes"),
    ("study", "num_layers", "0", ">= 1"),
    ("study", "mlp_width", "0", ">= 1"),
    ("study", "hidden_size", "30", "a multiple of num_heads (4)"),
    ("study", "heldout_fraction", "1.0", "between 0 and 1"),
    ("study", "steps", "0", ">= 1"),
    ("study", "learning_rate", "0", "> 0"),
    ("study", "warmup_steps", "-1", ">= 0"),
    ("study", "device", '"gpu"', "auto, cpu, cuda"),
    ("study", "explain_excerpts", "0", ">= 1"),
    ("comparison", "depth_bins", "0", ">= 1"),
    ("comparison", "models", '["nope"]', "declared models, among m"),
    ("comparison", "reference", '"m2"', "one of its models"),
]


def config(section: str, key: str, value: str) -> str:
    tables = {"explainers.e": LLM, "simulators.s": LLM + 'method = "chat_logprobs"\n'}
    if section == "models.m":
        return f'[models.m]\npath = "x"\nnum_layers = 2\n{key} = {value}\n'.replace(
            "num_layers = 2\nnum_layers", "num_layers"
        )
    return f"{MODEL}[{section}]\n{tables.get(section, '')}{key} = {value}\n"


@pytest.mark.parametrize(("section", "key", "value", "allowed"), CASES)
def test_each_setting_is_checked_in_one_line(tmp_path, section, key, value, allowed):
    path = tmp_path / "autointerp.toml"
    path.write_text(config(section, key, value))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, tmp_path / "home")
    message = str(caught.value)
    assert "\n" not in message
    assert allowed in message, message
    if section != "pipeline":
        assert message.startswith(f"[{section}] {key} = "), message


def test_an_api_key_pasted_as_the_variable_name_is_refused_and_never_shown(tmp_path):
    key = "sk-proj-abcdefghijklmnop1234"
    path = tmp_path / "autointerp.toml"
    path.write_text(f'{MODEL}[explainers.e]\n{LLM}api_key_env = "{key}"\n')
    with pytest.raises(ConfigError, match="NAME of an environment variable") as caught:
        load_settings(path, tmp_path / "home")
    assert key not in str(caught.value)


def test_unknown_keys_and_missing_layers_are_named(tmp_path):
    path = tmp_path / "autointerp.toml"
    path.write_text(f"{MODEL}[records]\ntopk = 5\n")
    with pytest.raises(ConfigError, match=r"\[records\] unknown keys \['topk'\]; known keys"):
        load_settings(path, tmp_path / "home")
    path.write_text('[models.m]\npath = "x"\n')
    with pytest.raises(ConfigError, match=r"\[models.m\] num_layers is missing"):
        load_settings(path, tmp_path / "home")
