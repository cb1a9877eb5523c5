"""Revision rounds: an explanation revised with its counterexamples, rescored, and kept only when
it scores higher on the calibration split (DESIGN.md "revisions").

A round takes each neuron's current explanation (CURRENT_SCHEMA: round 0 is the explanations
table, via `current_explanations`; round r reads round r − 1's output) and that round's
counterexamples (`revise.counterexamples`). The explainer writes a revised explanation from
its train top records and the counterexamples with their true activations; the SAME simulator
simulates it on the same scoring excerpts, `scores.score` scores it, and it replaces the
current one only if its ev_correlation on the calibration split (top_and_random) is higher.
Valid and test never decide anything: the test score is carried along to be reported.

Offline, the token-statistics baseline revises (`revise.baseline`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import polars as pl

from autointerp.activations.data_model import ActivationRecord, NeuronId, peak_activation
from autointerp.activations.excerpts import records_by_neuron
from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.config.settings import RevisionSpec
from autointerp.errors import InputError
from autointerp.explain.prompt_format import (
    ACTIVATION_FORMAT,
    EXPLANATION_LEAD,
    STUDY_INTRO,
    ChatPrompt,
    ResponseParseError,
    explainer_block,
    few_shot_answer,
    format_records,
    normalize_activations,
    parse_explanation,
)
from autointerp.llm.client import LLMClient
from autointerp.llm.probe import probe
from autointerp.llm.requests import CallResult, LLMRequest
from autointerp.revise.baseline import revise_by_token_statistics
from autointerp.revise.counterexamples import (
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    GENERATED,
    Counterexample,
    check_current,
    usable_counterexamples,
)
from autointerp.revise.generation import ACTIVATING, NON_ACTIVATING
from autointerp.score.scores import CALIBRATION_SPLIT, score
from autointerp.score.selection import chosen_samples
from autointerp.simulate.simulations import simulate
from autointerp.storage.schemas import CURRENT_SCHEMA, EXPLANATIONS_SCHEMA, REVISIONS_SCHEMA

REVISION_PROMPT_VERSION = "revision-v1"
REPORTED_SPLIT = "test"
DEFAULT_SPEC = RevisionSpec()

REVISION_SYSTEM_MESSAGE = (
    f"{STUDY_INTRO} Excerpts are written one token per line in the format {ACTIVATION_FORMAT} "
    "You are shown excerpts on which a neuron responds strongly, an explanation of the neuron, and "
    "counterexamples that test the explanation, with the neuron's true activations. Revise "
    "the explanation so that it accounts for the excerpts and the counterexamples alike, in "
    "one short phrase."
)
_LABELS = {
    ACTIVATING: "A text written to make the neuron respond strongly",
    NON_ACTIVATING: "A similar text written not to make the neuron respond",
    FALSE_POSITIVE: "An excerpt where the explanation predicts a response the neuron does not give",
    FALSE_NEGATIVE: "An excerpt where the neuron responds more than the explanation predicts",
}


def revision_request(
    explanation: str,
    top_records: Sequence[ActivationRecord],
    counterexamples: Sequence[Counterexample],
) -> ChatPrompt:
    """The chat prompt asking for a revised explanation; its answer is read with
    `prompts.parse_explanation`.

    The train top records are written as the explainer saw them (reference format and
    normalization), then the explanation as a worked answer, then each counterexample under a
    line saying what it is, with its true activations on the same scale: normalized against
    the train records' maximum, so a counterexample stronger than all of them reads 10."""
    if not top_records:
        raise InputError("a revision needs the neuron's train top records")
    if not counterexamples:
        raise InputError("a revision needs at least one counterexample")
    peak = peak_activation(top_records)
    capped = [
        ActivationRecord(c.tokens, [min(float(a), peak) for a in c.true_activations])
        for c in counterexamples
    ]
    # Capped at the train peak, the counterexamples leave the joint maximum where it was.
    values = normalize_activations([*top_records, *capped])[len(top_records) :]
    text = explainer_block(1, top_records) + few_shot_answer(explanation)
    text += "\n\nCounterexamples, with the neuron's true activations on the same scale:"
    for counterexample, shown in zip(counterexamples, values, strict=True):
        text += f"\n\n{_LABELS[counterexample.expected]}:"
        text += format_records([(counterexample.tokens, shown)])
    text += f"\n\nRevised explanation of neuron 1 behavior: {EXPLANATION_LEAD}"
    return ChatPrompt(
        messages=[
            {"role": "system", "content": REVISION_SYSTEM_MESSAGE},
            {"role": "user", "content": text},
        ],
        prompt_version=REVISION_PROMPT_VERSION,
    )


def current_explanations(
    explanations: pl.DataFrame, scores: pl.DataFrame, simulator: SimulatorProfile
) -> pl.DataFrame:
    """Round 0 (CURRENT_SCHEMA): per neuron and explainer, the usable explanation sample that
    counts by the project's one rule (`score.selection`: chosen on valid), scored by
    `simulator`, with its calibration and test scores. A neuron with no score under `simulator`
    has nothing a revision could be measured against, and is left out."""
    keys = ["layer", "neuron", "explainer", "explainer_hash", "sample"]
    mine = scores.filter(
        (pl.col("simulator") == simulator.name) & (pl.col("simulator_hash") == simulator.hash)
    )
    top_and_random = mine.filter(pl.col("scored_on") == "top_and_random")

    def split_score(split: str, name: str) -> pl.DataFrame:
        return top_and_random.filter(pl.col("split") == split).select(
            *keys, pl.col("ev_correlation").alias(name)
        )

    usable = explanations.filter(pl.col("error").is_null() & pl.col("explanation").is_not_null())
    chosen = chosen_samples(mine, reported=REPORTED_SPLIT).select(keys)
    return (
        usable.select(*keys, "explanation")
        .join(chosen, on=keys, how="semi")
        .join(split_score(CALIBRATION_SPLIT, "calibration_score"), on=keys, how="left")
        .join(split_score(REPORTED_SPLIT, "reported_score"), on=keys, how="left")
        .with_columns(
            simulator=pl.lit(simulator.name),
            simulator_hash=pl.lit(simulator.hash),
            round=pl.lit(0),
        )
        .select(*CURRENT_SCHEMA)
        .cast(CURRENT_SCHEMA)
        .sort("layer", "neuron", "explainer")
    )


def _defined(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _better(candidate: float | None, previous: float | None) -> bool:
    """Higher on calibration; a defined score beats an undefined one, never the other way."""
    if not _defined(candidate):
        return False
    return not _defined(previous) or candidate > previous


def _candidate_scores(
    candidates: pl.DataFrame, simulations: pl.DataFrame, calibrate: bool
) -> dict[NeuronId, dict[str, object]]:
    """Per neuron: calibration and test scores of its candidate, its simulations' call ids, and
    the first simulation error when nothing could be scored."""
    scores = score(simulations, calibrate=calibrate).filter(pl.col("scored_on") == "top_and_random")
    out: dict[NeuronId, dict[str, object]] = {
        NeuronId(layer, neuron): {"call_ids": [], "errors": []}
        for layer, neuron in candidates.select("layer", "neuron").iter_rows()
    }
    for layer, neuron, call_ids, error in simulations.select(
        "layer", "neuron", "call_ids", "error"
    ).iter_rows():
        entry = out[NeuronId(layer, neuron)]
        entry["call_ids"] += call_ids
        if error is not None:
            entry["errors"].append(error)
    for layer, neuron, split, value in scores.select(
        "layer", "neuron", "split", "ev_correlation"
    ).iter_rows():
        out[NeuronId(layer, neuron)][split] = value
    return out


def _check_counterexamples(
    counterexamples: pl.DataFrame, previous: pl.DataFrame, round_number: int
) -> None:
    """Counterexamples must be this round's, made against the explanations being revised."""
    stale = counterexamples.join(
        previous.select("layer", "neuron", current="explanation"), on=["layer", "neuron"]
    ).filter((pl.col("explanation") != pl.col("current")) | (pl.col("round") != round_number))
    if stale.height:
        row = stale.row(0, named=True)
        raise InputError(
            f"{stale.height} counterexamples are not round {round_number}'s for the current "
            f"explanations (neuron {row['layer']}/{row['neuron']}: round {row['round']}, made "
            f"for {row['explanation']!r}, current {row['current']!r})"
        )


def revise_round(
    round_number: int,
    previous: pl.DataFrame,
    counterexamples: pl.DataFrame,
    excerpts: pl.DataFrame,
    explainer: ExplainerProfile,
    simulator: SimulatorProfile,
    *,
    explainer_client: LLMClient | None,
    simulator_client: LLMClient | None,
    spec: RevisionSpec = DEFAULT_SPEC,
    reviser: ExplainerProfile | None = None,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """Revise every neuron of `previous` (CURRENT_SCHEMA, round `round_number` − 1) with its
    counterexamples of this round (COUNTEREXAMPLES_SCHEMA), on a neuron_excerpts frame.

    One row per neuron (REVISIONS_SCHEMA): the candidate (`revised_explanation`), its and the
    previous explanation's calibration scores, whether it was `kept`, and the explanation
    carried forward with its calibration and test scores, so the frame is the next round's
    `previous`. A neuron without usable counterexamples, or whose candidate could not be
    written or scored, carries its explanation forward with `error` saying why. Returns the
    rows and the LLM calls made (revisions, then simulations). `reviser` writes the revisions in
    the explainer's place (`explainer_client` is then its client); the rows stay the
    explainer's."""
    check_current(previous, explainer, simulator)
    writer = reviser or explainer
    if previous.filter(pl.col("round") != round_number - 1).height:
        raise InputError(
            f"round {round_number} revises the explanations of round {round_number - 1}"
        )
    _check_counterexamples(counterexamples, previous, round_number)
    usable = usable_counterexamples(counterexamples)
    failed_generation = {
        NeuronId(layer, neuron): error
        for layer, neuron, error in counterexamples.filter(
            (pl.col("source") == GENERATED) & pl.col("text").is_null()
        )
        .select("layer", "neuron", "error")
        .iter_rows()
    }
    train = records_by_neuron(excerpts, split="train", kind="top")
    rows = {
        NeuronId(r["layer"], r["neuron"]): r
        | {
            "round": round_number,
            "previous_explanation": r["explanation"],
            "revised_explanation": None,
            "kept": False,
            "previous_score": r["calibration_score"],
            "candidate_score": None,
            "previous_reported_score": r["reported_score"],
            "counterexamples": 0,
            "prompt_hash": None,
            "call_ids": [],
            "error": None,
        }
        for r in previous.iter_rows(named=True)
    }
    todo = []
    for neuron, row in rows.items():
        row["counterexamples"] = len(usable.get(neuron, []))
        if not usable.get(neuron):
            why = failed_generation.get(neuron)
            row["error"] = "no usable counterexamples" + (f" ({why})" if why else "")
        elif neuron not in train:
            row["error"] = "no train top excerpts"
        else:
            todo.append(neuron)

    calls: list[CallResult] = []
    if writer.kind == "baseline":
        reference = records_by_neuron(excerpts, split="train", kind="random")
        for neuron in todo:
            rows[neuron]["revised_explanation"] = revise_by_token_statistics(
                train[neuron], reference.get(neuron, []), usable[neuron], spec
            )
    elif todo:
        if explainer_client is None:
            raise InputError(f"explainer {writer.name!r} calls an LLM: it needs a client")
        explainer_client.check_serves(writer.model, writer.base_url)
        prompts = [revision_request(rows[n]["explanation"], train[n], usable[n]) for n in todo]
        params = {
            "n": 1,
            "max_tokens": writer.max_tokens,
            "temperature": writer.temperature,
            "top_p": writer.top_p,
        }
        llm_requests = [LLMRequest.chat(p.messages, **params) for p in prompts]
        probe(explainer_client, llm_requests)
        calls = explainer_client.run_all(llm_requests, label=f"round {round_number}: revisions")
        for neuron, prompt, result in zip(todo, prompts, calls, strict=True):
            row = rows[neuron]
            row["prompt_hash"], row["call_ids"] = prompt.prompt_hash, [result.call_id]
            if not result.ok:
                row["error"] = f"revision: {result.error}"
                continue
            try:
                row["revised_explanation"] = parse_explanation(result.text or "")
            except ResponseParseError as err:
                row["error"] = f"revision: {err}"

    written = [n for n in todo if rows[n]["revised_explanation"] is not None]
    if not written:
        return _frame(rows), calls
    lineage = ("layer", "neuron", "explainer", "explainer_hash", "sample")
    candidates = pl.DataFrame(
        [
            {key: rows[n][key] for key in lineage}
            | {"explanation": rows[n]["revised_explanation"], "call_ids": [], "error": None}
            for n in written
        ],
        schema=EXPLANATIONS_SCHEMA,
    )
    simulations, simulation_calls = simulate(
        simulator, candidates, excerpts, client=simulator_client
    )
    scored = _candidate_scores(candidates, simulations, simulator.calibration)
    for neuron in written:
        row, result = rows[neuron], scored[neuron]
        row["call_ids"] = row["call_ids"] + result["call_ids"]
        row["candidate_score"] = result.get(CALIBRATION_SPLIT)
        if row["candidate_score"] is None:
            first = result["errors"][0] if result["errors"] else "no scoring excerpts"
            row["error"] = f"the revision could not be scored: {first}"
        if _better(row["candidate_score"], row["previous_score"]):
            row |= {
                "kept": True,
                "explanation": row["revised_explanation"],
                "calibration_score": row["candidate_score"],
                "reported_score": result.get(REPORTED_SPLIT),
            }
    return _frame(rows), calls + simulation_calls


def _frame(rows: dict[NeuronId, dict]) -> pl.DataFrame:
    return pl.DataFrame(list(rows.values()), schema=REVISIONS_SCHEMA).sort("layer", "neuron")
