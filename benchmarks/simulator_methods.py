"""What each simulator method costs and leaves unanswered, measured offline.

- calls and tokens per neuron of the simulate stage (30 scoring excerpts of 64 tokens, the
  probe call included) for all-at-once, chat-logprobs and plain-text, against the scripted
  OpenAI-compatible server (its tokenizer splits words and punctuation, so token counts are
  relative, not a real model's);
- the share of target positions left unanswered when the recorded vLLM and llama.cpp echo
  replies of tests/simulate are read, and for the llama.cpp reply read without the shift a
  server without BOS needs (what the parser did before).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.activations.data_model import ActivationRecord
from autointerp.config.profiles import simulator_profile
from autointerp.explain.few_shot import FewShotNeuron
from autointerp.llm.client import LLMClient
from autointerp.llm.responses import parse_response
from autointerp.simulate.parsers import expected_value, parse_all_at_once
from autointerp.simulate.simulations import simulate
from autointerp.simulate.simulator_prompt import build_all_at_once_request
from autointerp.testing.llm_server import (
    Answer,
    LLMServer,
    Tok,
    chat_simulator_handler,
    no_sleep,
    tokenize,
)
from benchmarks.common import save

RECORDED = Path(__file__).parents[1] / "tests/simulate/recorded"
WORDS = [f" w{i}" for i in range(200)]
EXCERPTS, TOKENS = 30, 64


def scoring_excerpts(seed: int = 0) -> pl.DataFrame:
    """One neuron's 30 scoring excerpts (5 top and 5 random in each scoring split)."""
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)[rng.integers(0, len(WORDS), (EXCERPTS, TOKENS))]
    splits = [s for s in ("calibration", "valid", "test") for _ in range(10)]
    return pl.DataFrame(
        {
            "layer": np.zeros(EXCERPTS, dtype=np.int32),
            "neuron": np.zeros(EXCERPTS, dtype=np.int32),
            "split": splits,
            "kind": ["top", "random"] * (EXCERPTS // 2),
            "rank": np.arange(EXCERPTS, dtype=np.int32),
            "excerpt_id": np.arange(EXCERPTS, dtype=np.int64),
            "activations": pl.Series(rng.random((EXCERPTS, TOKENS)).astype(np.float32)).cast(
                pl.List(pl.Float32)
            ),
            "tokens": pl.Series(words).cast(pl.List(pl.Utf8)),
        }
    )


def explanations() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "layer": [0],
            "neuron": [0],
            "explainer": ["e"],
            "explainer_hash": ["h"],
            "sample": [0],
            "explanation": ["the word w7"],
            "error": [None],
        },
        schema_overrides={"layer": pl.Int32, "neuron": pl.Int32, "sample": pl.Int32},
    )


def echo(received) -> Answer:
    """All-at-once: a number distribution at every `unknown`, as a serving model gives."""
    toks = []
    for i, token in enumerate(tokenize(received.body["prompt"])):
        top = {"0": math.log(0.6), "5": math.log(0.4)} if token == "unknown" else None
        toks.append(Tok(token, None if i == 0 else -1.0, top))
    return Answer(["\n"], echo_tokens=toks)


def chat(received):
    return chat_simulator_handler()(received)


def per_method() -> dict:
    out = {}
    for method, handler in (("all_at_once", echo), ("chat_logprobs", chat), ("plain_text", chat)):
        with LLMServer(lambda r, h=handler: chat(r) if "messages" in r.body else h(r)) as server:
            profile = simulator_profile(
                method, {"kind": "llm", "method": method, "model": "m", "base_url": server.url}
            )
            with tempfile.TemporaryDirectory() as cache:
                client = LLMClient(profile.endpoint(), cache, sleep=no_sleep)
                with client:
                    frame, calls = simulate(
                        profile, explanations(), scoring_excerpts(), client=client
                    )
            missing = frame["missing_positions"].list.len().sum()
            out[method] = {
                "http_calls_per_neuron": server.count(),
                "prompt_tokens_per_neuron": sum(c.prompt_tokens or 0 for c in calls),
                "completion_tokens_per_neuron": sum(c.completion_tokens or 0 for c in calls),
                "error_rows": int(frame["error"].is_not_null().sum()),
                "unanswered_share": round(missing / (EXCERPTS * TOKENS), 4),
            }
    return out


def recorded_unanswered() -> dict:
    few_shot = [
        FewShotNeuron(
            records=(ActivationRecord(tokens=["a", " boat"], activations=[0.0, 1.5]),),
            explanation="boats",
        )
    ]
    request = build_all_at_once_request("ships", ["The", " ship", " sails"], few_shot=few_shot)
    out = {}
    for name in ("vllm_echo", "llama_cpp_echo_no_bos"):
        logprobs = parse_response("completion", (RECORDED / f"{name}.json").read_text())
        logprobs = logprobs.logprobs[0]
        result = parse_all_at_once(request, logprobs)
        # The reading before: the alternatives at the position that starts at `unknown` only.
        at = [logprobs.text_offset.index(o) for o in request.answer_offsets]
        unshifted = [expected_value(list(logprobs.top_logprobs[i].items())) for i in at]
        out[name] = {
            "unanswered_share": len(result.missing) / len(request.tokens),
            "unanswered_share_without_shift": sum(v is None for v in unshifted)
            / len(request.tokens),
            "shifted": result.shifted,
        }
    return out


def main() -> dict:
    result = {"per_neuron": per_method(), "recorded_replies": recorded_unanswered()}
    save("simulator_methods", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
