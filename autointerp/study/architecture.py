"""The study's language model: one small pre-LayerNorm transformer whose MLP activation is a
setting, so that models trained with different activations differ in nothing else.

Blocks are `x + attention(LN(x))` then `x + mlp(LN(x))`, with learned positions, causal
scaled-dot-product attention, linear layers without biases and embeddings tied to the LM head.
The MLPs (a neuron is the input to `mlp.down_proj`, as in every other architecture here):

- `gelu`, `relu`: `down(act(up(x)))`, exact GELU or ReLU;
- `swiglu`: `down(silu(gate(x)) * up(x))`, the gated SiLU of Llama-family models, on a width of
  `gated_width(width)` ≈ 2/3 of the ungated width, so that its three matrices hold as many
  parameters as the ungated MLP's two;
- `solu`: `down(LN(x * softmax(x)))` with `x = up(x)`, the softmax linear unit followed by a
  LayerNorm over the MLP's width (Elhage et al., 2022). A neuron is the LayerNorm's output, the
  input to `down_proj`.

The models are Hugging Face `PreTrainedModel`s registered with `AutoConfig`, `AutoModel` and
`AutoModelForCausalLM` under the model type `autointerp_study`, so a folder written by
`save_pretrained` loads through the same subject-model path as any other checkpoint.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from autointerp.config.settings import STUDY_ACTIVATIONS as ACTIVATIONS

MODEL_TYPE = "autointerp_study"


def gated_width(width: int) -> int:
    """The gated MLP width whose three matrices match the parameters of an ungated MLP of
    `width` (two matrices): round(2/3 · width)."""
    return round(2 * width / 3)


def mlp_width(activation: str, width: int) -> int:
    """The neurons per layer of an `activation` MLP matched to an ungated MLP of `width`."""
    return gated_width(width) if activation == "swiglu" else width


class StudyConfig(PreTrainedConfig):
    model_type = MODEL_TYPE

    activation: str = "gelu"  # one of ACTIVATIONS
    vocab_size: int = 4096
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512  # this model's MLP width (neurons per layer)
    max_position_embeddings: int = 128
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True


class Attention(nn.Module):
    def __init__(self, config: StudyConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = (
            part.view(batch, length, self.heads, -1).transpose(1, 2)
            for part in self.qkv_proj(x).chunk(3, dim=-1)
        )
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(mixed.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    """One MLP of the four kinds; `down_proj`'s input is the layer's neurons."""

    def __init__(self, config: StudyConfig) -> None:
        super().__init__()
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"activation {config.activation!r} is not one of {ACTIVATIONS}")
        self.activation = config.activation
        hidden, width = config.hidden_size, config.intermediate_size
        self.up_proj = nn.Linear(hidden, width, bias=False)
        if self.activation == "swiglu":
            self.gate_proj = nn.Linear(hidden, width, bias=False)
        if self.activation == "solu":
            self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up_proj(x)
        if self.activation == "gelu":
            neurons = F.gelu(up)
        elif self.activation == "relu":
            neurons = F.relu(up)
        elif self.activation == "swiglu":
            neurons = F.silu(self.gate_proj(x)) * up
        else:
            neurons = self.norm(up * torch.softmax(up, dim=-1))
        return self.down_proj(neurons)


class Block(nn.Module):
    def __init__(self, config: StudyConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Attention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class StudyPreTrainedModel(PreTrainedModel):
    config_class = StudyConfig
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["Block"]


class StudyModel(StudyPreTrainedModel):
    """The base model: embeddings, blocks and the final LayerNorm (no vocabulary projection)."""

    def __init__(self, config: StudyConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,  # unused: inputs are never padded
        **_: object,
    ) -> BaseModelOutput:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed_tokens(input_ids) + self.embed_positions(positions)
        for layer in self.layers:
            x = layer(x)
        return BaseModelOutput(last_hidden_state=self.norm(x))


class StudyForCausalLM(StudyPreTrainedModel):
    """The base model and its LM head, tied to the token embeddings (what training saves)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: StudyConfig) -> None:
        super().__init__(config)
        self.model = StudyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **_: object,
    ) -> CausalLMOutput:
        """With `labels` (usually `input_ids`), the mean next-token cross-entropy as `loss`."""
        logits = self.lm_head(self.model(input_ids, attention_mask).last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="mean"
            )
        return CausalLMOutput(loss=loss, logits=logits)


def parameter_counts(model: StudyForCausalLM) -> dict[str, int]:
    """Parameters in all (the tied embedding counted once), outside the embeddings, and in the
    MLPs."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(
        p.numel() for p in (model.model.embed_tokens.weight, model.model.embed_positions.weight)
    )
    mlp = sum(p.numel() for layer in model.model.layers for p in layer.mlp.parameters())
    return {
        "parameters": total,
        "non_embedding_parameters": total - embeddings,
        "mlp_parameters": mlp,
    }


AutoConfig.register(MODEL_TYPE, StudyConfig, exist_ok=True)
AutoModel.register(StudyConfig, StudyModel, exist_ok=True)
AutoModelForCausalLM.register(StudyConfig, StudyForCausalLM, exist_ok=True)
