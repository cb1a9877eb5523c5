"""Tiny, randomly initialised subject models built in code, for tests that must not download.

`make_tiny_model(tmp_path, "llama")` writes a folder as `save_pretrained` would (config, weights,
tokenizer) that `load_subject_model` reads through `ModelSpec.path`. Every model shares one
byte-level BPE tokenizer trained in code on a fixed text, so any English text tokenizes without
unknown tokens, as with a real model. Seeds are fixed: the same call builds the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import processors

from autointerp.config.settings import ModelSpec
from autointerp.study import architecture as study_architecture
from autointerp.study.tokenizer import EOS, train_bpe

HIDDEN = 32
INTERMEDIATE = 64  # MLP width: the number of neurons per layer
# GPT-2 XL's neuron layout (48 layers x 6,400 MLP neurons = 307,200, the reference method's
# scale) around a tiny hidden size: the graph's tables at full size, in seconds of compute.
XL_LAYERS, XL_NEURONS = 48, 6400
HEADS = 4
MAX_POSITIONS = 256

_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. A king and a queen walked in the garden of the castle,
talking of love, war and the price of bread. Numbers like 1, 2, 3 and 42 appear in the text, and so
do questions? Yes! Shall I compare thee to a summer's day? Thou art more lovely and more temperate.
def main(): return print("hello world") # code has brackets [0] and {keys}.
"""

# Architecture -> (config class, model class saved to disk, config arguments). Decoders are saved
# with their LM head, as users' checkpoints are; the loader must take the base model out of them.
_ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": HIDDEN, "n_inner": INTERMEDIATE, "n_head": HEADS, "n_positions": MAX_POSITIONS},
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 2}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"num_key_value_heads": 2}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"num_key_value_heads": 2}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"num_key_value_heads": 2, "head_dim": 8}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"num_key_value_heads": 1, "head_dim": 8}),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {"num_key_value_heads": 1, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"num_key_value_heads": 1, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 16},
    ),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {}),
    "bert": ("BertConfig", "BertForMaskedLM", {"type_vocab_size": 2}),
    # The activation study's own model, with its most unusual MLP.
    "autointerp_study": ("StudyConfig", "StudyForCausalLM", {"activation": "solu"}),
}
ARCHITECTURES = tuple(_ARCHITECTURES)

# The special tokens each family's real tokenizer puts around a text: Llama, Mistral and Gemma a
# beginning-of-sequence token, BERT [CLS] and [SEP]; GPT-2, GPT-NeoX and Qwen none.
SPECIAL_TOKENS: dict[str, tuple[str | None, str | None]] = {
    "llama": ("<s>", None),
    "mistral": ("<s>", None),
    "gemma": ("<bos>", None),
    "gemma2": ("<bos>", None),
    "gemma3_text": ("<bos>", None),
    "bert": ("[CLS]", "[SEP]"),
}


def make_tokenizer(architecture: str = "gpt2") -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (about 300 tokens) trained on a fixed text: deterministic. It
    adds the special tokens the architecture's real tokenizers add (SPECIAL_TOKENS)."""
    before, after = SPECIAL_TOKENS.get(architecture, (None, None))
    specials = [t for t in (before, after) if t]
    tokenizer = train_bpe([_TRAINING_TEXT], 320, [EOS, *specials])
    if specials:
        single = " ".join([*([before] if before else []), "$A", *([after] if after else [])])
        tokenizer.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, tokenizer.token_to_id(t)) for t in specials]
        )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=before or EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )


def make_tiny_model(
    tmp_path: Path,
    architecture: str = "llama",
    *,
    num_layers: int = 2,
    seed: int = 0,
    neurons: int = INTERMEDIATE,
    folder_name: str | None = None,
) -> Path:
    """Write a tiny random `architecture` model with `neurons` MLP neurons per layer and its
    tokenizer to `tmp_path/<folder_name or architecture>`."""
    config_class, model_class, extra = _ARCHITECTURES[architecture]
    extra = extra | ({"n_inner": neurons} if architecture == "gpt2" else {})
    tokenizer = make_tokenizer(architecture)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    arguments: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "num_hidden_layers": num_layers,
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
    }
    if architecture != "gpt2":  # GPT-2 names these n_embd, n_inner, n_head, n_positions
        arguments |= {
            "hidden_size": HIDDEN,
            "intermediate_size": neurons,
            "num_attention_heads": HEADS,
            "max_position_embeddings": MAX_POSITIONS,
        }
    config = _class(config_class)(**arguments | extra)
    torch.manual_seed(seed)
    model = _class(model_class)(config)
    folder = tmp_path / (folder_name or architecture)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_xl_shaped_model(tmp_path: Path) -> Path:
    """A GPT-2 with GPT-2 XL's neuron layout (XL_LAYERS x XL_NEURONS), hidden size 32, random
    weights (about 20M parameters, 80 MB), in `tmp_path/gpt2-xl-shaped`."""
    return make_tiny_model(
        tmp_path, "gpt2", num_layers=XL_LAYERS, neurons=XL_NEURONS, folder_name="gpt2-xl-shaped"
    )


def _class(name: str) -> type:
    """A class of transformers, or of the study's architecture (registered like them)."""
    return getattr(transformers, name, None) or getattr(study_architecture, name)


def tiny_spec(path: Path, num_layers: int = 2, **overrides: Any) -> ModelSpec:
    """A `ModelSpec` for a folder written by `make_tiny_model`, in float32 on the CPU."""
    fields: dict[str, Any] = {
        "name": f"tiny-{path.name}",
        "num_layers": num_layers,
        "path": str(path),
        "dtype": "float32",
        "device": "cpu",
        "batch_size": 4,
        "context_length": 64,
    }
    return ModelSpec(**fields | overrides)
