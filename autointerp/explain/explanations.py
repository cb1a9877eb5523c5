"""The explain stage: top_k_excerpts (with their tokens) -> the `explanations` table.

The explainer sees only each neuron's train top records (REFERENCE.md "Splits"). The token-
statistics baseline also needs a random reference for base rates; it takes the neuron's
reference random records (split "train", kind "random"), which no split scores, so no scored
excerpt reaches an explainer.

An LLM explainer sends one request per neuron asking for `n` samples, through the shared client
(bounded concurrency, retries, persistent cache). A call that fails, a prompt that cannot fit the
budget or a sample that cannot be read becomes a row with `error` set and no explanation; the rest
of the layer completes, and `check_error_fraction` decides whether the stage as a whole failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from autointerp.activations.data_model import ActivationRecord, NeuronId
from autointerp.activations.excerpts import neurons_of, records_by_neuron
from autointerp.activations.sampling import select_neurons
from autointerp.config.profiles import IMPORTED, ExplainerProfile
from autointerp.errors import InputError
from autointerp.explain.baseline import explain_by_token_statistics
from autointerp.explain.explainer_prompt import (
    TOKEN_LIST_PROMPT_VERSION,
    ExplanationRequest,
    build_explanation_request,
    build_token_list_explanation_request,
)
from autointerp.explain.prompt_format import ResponseParseError, parse_explanation
from autointerp.llm.client import LLMClient
from autointerp.llm.probe import probe
from autointerp.llm.requests import CallResult, LLMRequest
from autointerp.progress import Progress
from autointerp.storage.schemas import EXPLANATIONS_SCHEMA


def _row(
    neuron: NeuronId,
    explainer: dict[str, str],
    sample: int,
    *,
    explanation: str | None = None,
    prompt_hash: str | None = None,
    call_ids: Sequence[str] = (),
    error: str | None = None,
) -> dict[str, object]:
    return {
        "layer": neuron.layer,
        "neuron": neuron.neuron,
        **explainer,
        "sample": sample,
        "explanation": explanation,
        "prompt_hash": prompt_hash,
        "call_ids": list(call_ids),
        "error": error,
    }


def explanation_request(
    profile: ExplainerProfile, records: list[ActivationRecord], ranked_tokens: Sequence[str]
) -> ExplanationRequest:
    if profile.prompt == TOKEN_LIST_PROMPT_VERSION:
        return build_token_list_explanation_request(ranked_tokens, few_shot=profile.few_shot)
    return build_explanation_request(
        records, few_shot=profile.few_shot, max_prompt_tokens=profile.max_prompt_tokens
    )


def explain(
    profile: ExplainerProfile,
    excerpts: pl.DataFrame,
    *,
    client: LLMClient | None,
    progress: Progress | None = None,
    ranked_tokens: Mapping[NeuronId, Sequence[str]] | None = None,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """Explain the profile's sample of the neurons in `excerpts` (a neuron_excerpts frame).
    `ranked_tokens`: each neuron's tokens by mean activation over the corpus
    (`excerpts.top_mean_tokens`), which the token-list prompt shows.

    Returns the `explanations` table (one row per neuron and sample; see EXPLANATIONS_SCHEMA)
    and the LLM calls made (empty for the baseline), for the calls audit table. The baseline
    writes one sample per neuron; an LLM profile asks for `n`, and a neuron whose call or prompt
    failed gets `n` error rows, so that every (neuron, sample) appears once.
    """
    if profile.kind == IMPORTED:
        raise InputError(
            f"explainer {profile.name!r} is imported: its explanations are its dataset's "
            "(autointerp.interchange.imported), never written here"
        )
    neurons = select_neurons(neurons_of(excerpts), profile.neuron_sample)
    train = records_by_neuron(excerpts, split="train", kind="top")
    explainer = {"explainer": profile.name, "explainer_hash": profile.hash}  # hashed once
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(neurons))

    rows: list[dict[str, object]] = []
    if profile.kind == "baseline":
        reference = records_by_neuron(excerpts, split="train", kind="random")
        for neuron in neurons:
            if neuron not in train:
                rows.append(_row(neuron, explainer, 0, error="no train top excerpts"))
            else:
                text = explain_by_token_statistics(
                    train[neuron], reference.get(neuron, []), max_tokens=profile.max_cues
                )
                rows.append(_row(neuron, explainer, 0, explanation=text))
            tick()
        return pl.DataFrame(rows, schema=EXPLANATIONS_SCHEMA), []

    if client is None:
        raise InputError(f"explainer {profile.name!r} calls an LLM: it needs a client")
    client.check_serves(profile.model, profile.base_url)
    prompts: list[tuple[NeuronId, ExplanationRequest]] = []
    for neuron in neurons:
        try:
            if neuron not in train:
                raise InputError("no train top excerpts")
            tokens = (ranked_tokens or {}).get(neuron, ())
            prompts.append((neuron, explanation_request(profile, train[neuron], tokens)))
        except InputError as err:
            rows += [_row(neuron, explainer, s, error=str(err)) for s in range(profile.n)]
            tick()
    params = {
        "n": profile.n,
        "max_tokens": profile.max_tokens,
        "temperature": profile.temperature,
        "top_p": profile.top_p,
    }
    llm_requests = [LLMRequest.chat(request.messages, **params) for _, request in prompts]
    if progress is not None:
        progress(
            done, len(neurons)
        )  # starts the clock: a stage waiting on its first call reports so
    probe(client, llm_requests)
    results = client.run_all(
        llm_requests, on_result=lambda _, __: tick(), label=f"explanations by {profile.name}"
    )
    for (neuron, request), result in zip(prompts, results, strict=True):
        common = {"prompt_hash": request.prompt_hash, "call_ids": [result.call_id]}
        if not result.ok:
            rows += [
                _row(neuron, explainer, s, error=result.error, **common) for s in range(profile.n)
            ]
            continue
        # A server that ignores `n` (llama.cpp) answers fewer choices: fewer samples, no error.
        for sample, text in enumerate(result.texts):
            try:
                rows.append(
                    _row(neuron, explainer, sample, explanation=parse_explanation(text), **common)
                )
            except ResponseParseError as err:
                rows.append(_row(neuron, explainer, sample, error=str(err), **common))
    frame = pl.DataFrame(rows, schema=EXPLANATIONS_SCHEMA).sort("layer", "neuron", "sample")
    return frame, results
