"""The explain stage: top_k_excerpts (with their tokens) -> the `explanations` table.

The explainer sees only each neuron's train top records (REFERENCE.md "Splits"). The token-
statistics baseline also needs a random reference for base rates; it takes the neuron's
calibration random records, never valid or test ones, so no scored excerpt reaches an explainer.

An LLM explainer sends one request per neuron asking for `n` samples, through the shared client
(bounded concurrency, retries, persistent cache). A call that fails, a prompt that cannot fit the
budget or a sample that cannot be read becomes a row with `error` set and no explanation; the rest
of the layer completes, and `check_error_fraction` decides whether the stage as a whole failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from autointerp.baselines import explain_by_token_statistics
from autointerp.data_model import ActivationRecord, NeuronId
from autointerp.errors import AutointerpError, InputError
from autointerp.llm.client import CallResult, LLMClient, LLMRequest
from autointerp.profiles import ExplainerProfile, NeuronSample
from autointerp.prompts import (
    TOKEN_LIST_PROMPT_VERSION,
    ExplanationRequest,
    ResponseParseError,
    build_explanation_request,
    build_token_list_explanation_request,
    parse_explanation,
)

Progress = Callable[[int, int], None]  # (done, total), e.g. autointerp.progress.ProgressLog

EXPLANATIONS_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,  # the profile's name
    "explainer_hash": pl.Utf8,
    "sample": pl.Int32,
    "explanation": pl.Utf8,  # null when the row is an error
    "prompt_hash": pl.Utf8,  # null for the baseline, which has no prompt
    "call_ids": pl.List(pl.Utf8),
    "error": pl.Utf8,  # null when fine
}


class TooManyErrors(AutointerpError):
    """More of a stage's rows failed than the configuration's max_error_fraction allows."""


def neuron_excerpts(top_k_excerpts: pl.DataFrame, corpus: pl.DataFrame) -> pl.DataFrame:
    """top_k_excerpts with each excerpt's token strings (`tokens`) from the corpus: what every
    stage reads. An excerpt missing from the corpus, or whose token count differs from its
    activation count, means the two tables do not belong together: InputError."""
    joined = top_k_excerpts.join(
        corpus.select("excerpt_id", "tokens"), on="excerpt_id", how="left"
    ).sort("layer", "neuron", "split", "kind", "rank")
    missing = joined.filter(pl.col("tokens").is_null())["excerpt_id"].unique()
    if len(missing):
        raise InputError(
            f"{len(missing)} excerpts of top_k_excerpts are not in the corpus (e.g. "
            f"{sorted(missing.to_list())[:5]}): they were captured from another corpus"
        )
    mismatched = joined.filter(pl.col("tokens").list.len() != pl.col("activations").list.len())
    if mismatched.height:
        row = mismatched.row(0, named=True)
        raise InputError(
            f"{mismatched.height} excerpts have not one activation per token: excerpt "
            f"{row['excerpt_id']} has {len(row['tokens'])} tokens and "
            f"{len(row['activations'])} activations (captured from another corpus?)"
        )
    return joined


def neurons_of(excerpts: pl.DataFrame) -> list[NeuronId]:
    """The neurons of an excerpts frame, sorted."""
    pairs = excerpts.select("layer", "neuron").unique().sort("layer", "neuron")
    return [NeuronId(layer, neuron) for layer, neuron in pairs.iter_rows()]


def select_neurons(
    neurons: Sequence[NeuronId], neuron_sample: str | NeuronSample
) -> list[NeuronId]:
    """The neurons a profile runs on, sorted, taken per layer (a run may span several): all of
    them, the first N, or N chosen at random with a seed (the same neurons on every run)."""
    sample = NeuronSample.parse(neuron_sample) if isinstance(neuron_sample, str) else neuron_sample
    chosen: list[NeuronId] = []
    for layer in sorted({n.layer for n in neurons}):
        ordered = sorted((n for n in neurons if n.layer == layer), key=lambda n: n.neuron)
        if sample.mode == "all" or sample.count is None or sample.count >= len(ordered):
            chosen += ordered
        elif sample.mode == "first":
            chosen += ordered[: sample.count]
        else:
            picks = np.random.default_rng(sample.seed).choice(
                len(ordered), sample.count, replace=False
            )
            chosen += [ordered[i] for i in sorted(picks)]
    return chosen


def records_by_neuron(
    excerpts: pl.DataFrame, *, split: str, kind: str
) -> dict[NeuronId, list[ActivationRecord]]:
    """Each neuron's records of one split and kind, in rank order (strongest first for top)."""
    chosen = excerpts.filter((pl.col("split") == split) & (pl.col("kind") == kind)).sort(
        "layer", "neuron", "rank"
    )
    records: dict[NeuronId, list[ActivationRecord]] = {}
    for layer, neuron, tokens, activations in chosen.select(
        "layer", "neuron", "tokens", "activations"
    ).iter_rows():
        records.setdefault(NeuronId(layer, neuron), []).append(
            ActivationRecord(tokens=tokens, activations=activations)
        )
    return records


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


def _request(profile: ExplainerProfile, records: list[ActivationRecord]) -> ExplanationRequest:
    if profile.prompt == TOKEN_LIST_PROMPT_VERSION:
        return build_token_list_explanation_request(records, few_shot=profile.few_shot)
    return build_explanation_request(
        records, few_shot=profile.few_shot, max_prompt_tokens=profile.max_prompt_tokens
    )


def explain(
    profile: ExplainerProfile,
    excerpts: pl.DataFrame,
    *,
    client: LLMClient | None,
    progress: Progress | None = None,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """Explain the profile's sample of the neurons in `excerpts` (a neuron_excerpts frame).

    Returns the `explanations` table (one row per neuron and sample; see EXPLANATIONS_SCHEMA)
    and the LLM calls made (empty for the baseline), for the calls audit table. The baseline
    writes one sample per neuron; an LLM profile asks for `n`, and a neuron whose call or prompt
    failed gets `n` error rows, so that every (neuron, sample) appears once.
    """
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
        reference = records_by_neuron(excerpts, split="calibration", kind="random")
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
    check_client(client, profile.model, profile.base_url)
    prompts: list[tuple[NeuronId, ExplanationRequest]] = []
    for neuron in neurons:
        try:
            if neuron not in train:
                raise InputError("no train top excerpts")
            prompts.append((neuron, _request(profile, train[neuron])))
        except InputError as err:
            rows += [_row(neuron, explainer, s, error=str(err)) for s in range(profile.n)]
            tick()
    params = {
        "n": profile.n,
        "max_tokens": profile.max_tokens,
        "temperature": profile.temperature,
        "top_p": profile.top_p,
    }
    results = client.run_all(
        [LLMRequest.chat(request.messages, **params) for _, request in prompts],
        on_result=lambda _, __: tick(),
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


def check_client(client: LLMClient, model: str | None, base_url: str | None) -> None:
    """Refuse a client for another endpoint: it would write another model's output under the
    profile's name and hash."""
    endpoint = client.endpoint
    if endpoint.model != model or (endpoint.base_url or None) != (base_url or None):
        raise InputError(
            f"the client calls {endpoint.model!r} at {endpoint.url}, but the profile names "
            f"{model!r} at {base_url or 'OpenAI'}: build the client from profile.endpoint()"
        )


def check_error_fraction(
    frame: pl.DataFrame, max_fraction: float, *, stage: str = "explanations"
) -> None:
    """Raise TooManyErrors when more than `max_fraction` of the frame's rows have an error,
    naming the counts and the most common errors; otherwise return quietly."""
    total = frame.height
    errors = frame["error"].drop_nulls().to_list()
    if not total or len(errors) <= max_fraction * total:
        return
    common = "; ".join(
        f"{message!r} ({count})" for message, count in Counter(errors).most_common(3)
    )
    raise TooManyErrors(
        f"{stage}: {len(errors)} of {total} rows failed ({len(errors) / total:.0%}), more than "
        f"max_error_fraction = {max_fraction:.0%}. Most common errors: {common}"
    )
