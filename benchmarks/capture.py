"""Capture overhead and dtype speed on the offline default model (SmolLM2-135M, CPU).

- overhead: tokens/s of capture with streaming records for ALL layers, against a bare forward pass
  of the same model over the same batches, interleaved in the same run (goal: ratio >= 0.8);
- dtype: bf16 against fp32 tokens/s of the bare forward pass, same batches;
- agreement: top-k excerpts of bf16 against fp32 on a small slice (overlap of the top-20 sets).
"""

from __future__ import annotations

import numpy as np
import torch

from autointerp.activations.capture import capture_records, token_matrix
from benchmarks.common import best_of, corpus, default_settings, save, subject


def bare_forward(model, tokens: np.ndarray, batch_size: int) -> None:
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            ids = torch.from_numpy(tokens[start : start + batch_size])
            model.model(input_ids=ids, attention_mask=torch.ones_like(ids))


def main(excerpts: int = 512, repeats: int = 2) -> dict:
    settings = default_settings()
    bf16 = subject(settings, "bfloat16")
    frame = corpus(settings, bf16, excerpts)
    _, tokens = token_matrix(frame)
    n_tokens = tokens.size
    layers = bf16.spec.layers
    batch = bf16.spec.batch_size
    bare_forward(bf16, tokens[:batch], batch)  # warm-up

    fp32 = subject(settings, "float32")
    # Interleaved, fastest of each: load from other processes on a shared machine hits all three.
    bare_s, capture_s, fp32_s = best_of(
        repeats,
        lambda: bare_forward(bf16, tokens, batch),
        lambda: capture_records(bf16, frame, layers, settings.records),
        lambda: bare_forward(fp32, tokens, batch),
    )

    # Agreement of bf16 and fp32 top-k on a small slice of layers.
    slice_layers = [0, len(layers) // 2, len(layers) - 1]
    top_bf16 = capture_records(bf16, frame, slice_layers, settings.records)
    top_fp32 = capture_records(fp32, frame, slice_layers, settings.records)
    overlap = [
        len(set(a) & set(b)) / len(b)
        for a, b in zip(top_bf16["top_excerpt_ids"], top_fp32["top_excerpt_ids"], strict=True)
    ]
    first = [
        a[0] == b[0]
        for a, b in zip(top_bf16["top_excerpt_ids"], top_fp32["top_excerpt_ids"], strict=True)
    ]
    result = {
        "excerpts": excerpts,
        "tokens": n_tokens,
        "layers_captured": len(layers),
        "torch_threads": torch.get_num_threads(),
        "bare_forward_tokens_per_s": n_tokens / bare_s,
        "capture_tokens_per_s": n_tokens / capture_s,
        "capture_over_bare_ratio": bare_s / capture_s,
        "fp32_tokens_per_s": n_tokens / fp32_s,
        "bf16_over_fp32_speedup": fp32_s / bare_s,
        "topk_overlap_bf16_vs_fp32_mean": float(np.mean(overlap)),
        "topk_overlap_bf16_vs_fp32_min": float(np.min(overlap)),
        "top1_same_fraction": float(np.mean(first)),
    }
    save("capture", result)
    return result


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key:40} {value:,.3f}" if isinstance(value, float) else f"{key:40} {value}")
