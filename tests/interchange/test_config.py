"""Declaring an imported model: what the configuration accepts, the profiles its graph runs, and
what it has no use for (a forward pass of its own, an LLM for its explanations)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from assets import model_assets
from assets.revisions import revision_profiles, revisions_skipped
from autointerp.config.profiles import explainer_profile
from autointerp.config.settings import load_settings
from autointerp.errors import ConfigError, InputError
from autointerp.explain.explanations import explain
from autointerp.simulate.simulations import simulate
from resources.llm import LLMClients

HEADER = '[autointerp]\ndefault_model = "published"\n[models.tiny]\npath = "/m"\nnum_layers = 2\n'


def settings_of(tmp_path: Path, model: str, extra: str = ""):
    config = tmp_path / "autointerp.toml"
    config.write_text(f"{HEADER}[models.published]\n{model}\n{extra}")
    return load_settings(config, home=tmp_path / "home")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ('openai_dataset = "/d"\npath = "/m"\nnum_layers = 2\nneurons = 8', "exactly one of"),
        ('openai_dataset = "/d"\nnum_layers = 2', "needs neurons"),
        ('path = "/m"\nnum_layers = 2\nneurons = 8', "for an openai_dataset only"),
        ('openai_dataset = "/d"\nnum_layers = 2\nneurons = 8\nweights = "nope"', "declared model"),
        ('openai_dataset = "/d"\nnum_layers = 3\nneurons = 8\nweights = "tiny"', "same model"),
        (
            'openai_dataset = "/d"\nnum_layers = 2\nneurons = 8\nneuron_sample = "some"',
            "neuron_sample = 'some'",
        ),
    ],
)
def test_a_bad_declaration_fails_clearly(tmp_path, model, message):
    with pytest.raises(ConfigError, match=message):
        settings_of(tmp_path, model)


def test_an_imported_profile_is_never_declared_nor_written_by_an_llm(tmp_path):
    with pytest.raises(ConfigError, match="kind must be one of"):
        explainer_profile("mine", {"kind": "imported"})
    with pytest.raises(ConfigError, match="unknown keys"):
        explainer_profile("mine", {"kind": "llm", "model": "m", "base_url": "x", "source": "/d"})
    settings = settings_of(tmp_path, 'openai_dataset = "/d"\nnum_layers = 2\nneurons = 8')
    model = settings.model("published")
    profiles = settings.for_model(model).profiles
    assert profiles.active_explainers == ["imported:published", "token-statistics-baseline"]
    assert profiles.active_simulators == ["lexical-baseline", "imported:published"]
    assert settings.for_model(settings.model("tiny")) is settings
    explainer = profiles.explainer("imported:published")
    simulator = profiles.simulator("imported:published")
    assert LLMClients(cache_dir=str(tmp_path)).client(explainer) is None
    elsewhere = settings_of(tmp_path, 'openai_dataset = "/e"\nnum_layers = 2\nneurons = 8')
    other = elsewhere.for_model(elsewhere.model("published")).profiles
    assert other.explainer("imported:published").hash != explainer.hash
    assert other.simulator("imported:published").hash != simulator.hash
    with pytest.raises(InputError, match="is imported"):
        explain(explainer, pl.DataFrame(), client=None)
    with pytest.raises(InputError, match="is imported"):
        simulate(simulator, pl.DataFrame(), pl.DataFrame(), client=None)


def test_revision_rounds_need_weights_and_a_reviser_that_writes(tmp_path):
    declared = 'openai_dataset = "/d"\nnum_layers = 2\nneurons = 8'
    settings = settings_of(tmp_path, declared)
    model = settings.model("published")
    keys = {key.path[-1] for asset in model_assets(settings, model) for key in asset.keys}
    assert {"corpus", "neuron_records", "imported_explanations", "scores"} <= keys
    assert not any(key.startswith("revised_explanations") for key in keys)
    assert "imported without weights" in revisions_skipped(settings, model)

    settings = settings_of(tmp_path, declared + '\nweights = "tiny"')
    model = settings.model("published")
    keys = {key.path[-1] for asset in model_assets(settings, model) for key in asset.keys}
    assert "revised_explanations_r2" in keys and revisions_skipped(settings, model) is None
    explainer, simulator, reviser = revision_profiles(settings.for_model(model))
    assert (explainer.name, simulator.name, reviser.name) == (
        "imported:published",
        "lexical-baseline",
        "token-statistics-baseline",
    )
    scored_by_import = replace(
        settings, revisions=replace(settings.revisions, simulator="imported:published")
    )
    with pytest.raises(ConfigError, match="cannot simulate"):
        revision_profiles(scored_by_import.for_model(model))
