"""The study's model: four MLPs alike in parameters, one definition of a neuron, and a folder
that loads as a subject model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from autointerp.activations.subject_model import load_subject_model
from autointerp.config.settings import STUDY_ACTIVATIONS, StudySpec
from autointerp.study.architecture import StudyConfig, StudyForCausalLM, parameter_counts
from autointerp.study.folders import save_pretrained
from autointerp.study.tokenizer import train_byte_level_bpe
from autointerp.study.training import study_config
from tests.study.conftest import tiny_study


def build(spec: StudySpec, activation: str, vocab_size: int) -> StudyForCausalLM:
    torch.manual_seed(0)
    return StudyForCausalLM(study_config(spec, activation, vocab_size))


def test_default_models_match_in_parameters_within_two_percent():
    spec = StudySpec()
    counts = {a: parameter_counts(build(spec, a, spec.vocab_size)) for a in STUDY_ACTIVATIONS}
    for kind in ("parameters", "non_embedding_parameters", "mlp_parameters"):
        values = [c[kind] for c in counts.values()]
        assert max(values) <= min(values) * 1.02, (kind, counts)
    # The gated MLP has 2/3 of the ungated width: its three matrices hold as much as their two.
    assert build(spec, "swiglu", 64).model.layers[0].mlp.down_proj.in_features == 341
    assert counts["gelu"] == counts["relu"]
    model = build(spec, "gelu", spec.vocab_size)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: counted once
    assert counts["gelu"]["parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("activation", STUDY_ACTIVATIONS)
def test_a_neuron_is_the_input_of_the_down_projection(activation):
    model = build(tiny_study(), activation, 64).eval()
    mlp = model.model.layers[1].mlp
    seen = {}
    mlp.down_proj.register_forward_pre_hook(lambda _m, inputs: seen.update(neurons=inputs[0]))
    mlp.register_forward_pre_hook(lambda _m, inputs: seen.update(x=inputs[0]))
    with torch.no_grad():
        model(torch.randint(0, 64, (2, 10)))
        up = mlp.up_proj(seen["x"])
        expected = {
            "gelu": lambda: F.gelu(up),
            "relu": lambda: F.relu(up),
            "swiglu": lambda: F.silu(mlp.gate_proj(seen["x"])) * up,
            "solu": lambda: mlp.norm(up * torch.softmax(up, dim=-1)),
        }[activation]()
    torch.testing.assert_close(seen["neurons"], expected)


def test_an_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="swish"):
        StudyForCausalLM(StudyConfig(activation="swish"))


def test_a_saved_model_loads_as_a_subject_model(tmp_path: Path):
    spec = tiny_study()
    tokenizer = train_byte_level_bpe(["to be or not to be, that is the question"] * 20, 300)
    model = build(spec, "solu", len(tokenizer)).eval()
    folder = save_pretrained(spec.model_folder(tmp_path, "solu"), model, tokenizer)
    subject = load_subject_model(
        spec.model_spec(tmp_path, "solu"), cache_dir=tmp_path, downloads=tmp_path, allow_hub=False
    )
    assert subject.architecture == "autointerp_study" and subject.num_layers == 2
    assert subject.neurons_per_layer == 64 and subject.context_length == 32
    assert subject.neuron_module(1) is subject.model.layers[1].mlp.down_proj
    ids = torch.randint(0, len(tokenizer), (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(
            subject.model(ids).last_hidden_state, model.model(ids).last_hidden_state
        )
    assert subject.tokenizer("to be").input_ids == tokenizer("to be").input_ids
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == ["solu"]
