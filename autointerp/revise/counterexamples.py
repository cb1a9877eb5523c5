"""Counterexamples: texts that test an explanation, with the subject model's true activations
(DESIGN.md "revisions"; the publication's first way to raise scores).

Two sources per neuron and round:
- generated: the explainer, from the explanation and the neuron's train top records, writes texts
  that should activate the neuron strongly and similar-looking texts that should not; the subject
  model is run on them. Offline, a template baseline writes them from the tokens the explanation
  names (the named tokens in new sentences, and near misses with them removed or replaced by a
  look-alike word).
- mined: excerpts the neuron was captured on, OUTSIDE the scoring splits (its train top records
  and quantile-band samples), that the simulator gets most wrong under the explanation: false
  positives (predicted high, true low) and false negatives (predicted low, true high).

Every counterexample is simulated under the explanation it tests with the same simulator that
scores, and `miss` says how badly the explanation missed: the largest per-token gap between the
true activation on the explainer's scale (relu, over the neuron's train top maximum, capped at 1)
and the prediction over 10.

No excerpt of a neuron's calibration, valid or test split becomes one of its counterexamples:
`mine_counterexamples` takes them as an argument, filters them out (by id and by identical
tokens, for corpora that repeat a text) and checks the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import polars as pl

from autointerp.activations.data_model import ActivationRecord, NeuronId
from autointerp.activations.excerpts import records_by_neuron, train_peaks
from autointerp.activations.probe import probe_texts
from autointerp.activations.splits import SCORING_SPLITS
from autointerp.activations.subject_model import SubjectModel
from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.config.settings import RevisionSpec
from autointerp.errors import InputError
from autointerp.llm.client import LLMClient
from autointerp.llm.requests import CallResult
from autointerp.revise.generation import generate_texts
from autointerp.revise.mining import allowed_candidates, held_out_excerpts, mining_candidates
from autointerp.simulate.simulations import simulate
from autointerp.storage.schemas import COUNTEREXAMPLES_SCHEMA, EXPLANATIONS_SCHEMA

GENERATED, MINED = "generated", "mined"
FALSE_POSITIVE, FALSE_NEGATIVE = "false_positive", "false_negative"
DEFAULT_SPEC = RevisionSpec()


@dataclass(frozen=True)
class Counterexample:
    """One usable counterexample, as the revision reads it."""

    expected: str  # activating | non-activating | false_positive | false_negative
    tokens: list[str]
    true_activations: list[float]
    predicted: list[float]  # 0–10

    @property
    def record(self) -> ActivationRecord:
        return ActivationRecord(tokens=self.tokens, activations=self.true_activations)


def misses(true: Sequence[float], predicted: Sequence[float], peak: float) -> tuple[float, float]:
    """(how far the prediction overshot, how far it fell short) at worst over the tokens, on a
    0–1 scale: true as min(1, relu(x) / peak), predicted over 10."""
    t = np.clip(np.asarray(true, dtype=np.float64), 0.0, None)
    t = np.minimum(t / peak, 1.0) if peak > 0 else np.zeros_like(t)
    p = np.asarray(predicted, dtype=np.float64) / 10.0
    return float(np.max(p - t, initial=0.0)), float(np.max(t - p, initial=0.0))


def _simulate_tokens(
    simulator: SimulatorProfile,
    current: pl.DataFrame,
    items: pl.DataFrame,
    client: LLMClient | None,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """The simulator's predictions for arbitrary texts (`items`: layer, neuron, item, tokens,
    activations) under each neuron's current explanation: (item, predicted, call_ids, error).

    The items go through `simulations.simulate` itself, labelled as a scoring split it reads,
    so the counterexamples get exactly the requests (and cache entries) scoring would make."""
    explanations = current.select(
        "layer",
        "neuron",
        "explainer",
        "explainer_hash",
        "sample",
        "explanation",
        prompt_hash=pl.lit(None, pl.Utf8),
        call_ids=pl.lit([], pl.List(pl.Utf8)),
        error=pl.lit(None, pl.Utf8),
    ).cast(EXPLANATIONS_SCHEMA)
    pseudo = items.select(
        "layer",
        "neuron",
        "tokens",
        "activations",
        excerpt_id=pl.col("item").cast(pl.Int64),
        split=pl.lit(SCORING_SPLITS[0]),
        kind=pl.lit("top"),
        rank=pl.col("item").cast(pl.Int32),
    )
    simulations, calls = simulate(simulator, explanations, pseudo, client=client)
    return simulations.select(
        item="excerpt_id", predicted="expected_activations", call_ids="call_ids", error="error"
    ), calls


def _row(current: dict, round_number: int, simulator: SimulatorProfile, **values) -> dict:
    return {
        "layer": current["layer"],
        "neuron": current["neuron"],
        "explainer": current["explainer"],
        "explainer_hash": current["explainer_hash"],
        "simulator": simulator.name,
        "simulator_hash": simulator.hash,
        "round": round_number,
        "explanation": current["explanation"],
        "text": None,
        "tokens": None,
        "true_activations": None,
        "predicted": None,
        "miss": None,
        "truncated": False,
        "excerpt_id": None,
        "call_ids": [],
        "error": None,
    } | values


def _with_predictions(
    rows: list[dict],
    current: pl.DataFrame,
    simulator: SimulatorProfile,
    client: LLMClient | None,
    peaks: Mapping[NeuronId, float],
) -> list[CallResult]:
    """Fill `predicted`, `miss`, `call_ids` and `error` of the rows that have tokens."""
    todo = [i for i, r in enumerate(rows) if r["error"] is None and r["tokens"]]
    if not todo:
        return []
    items = pl.DataFrame(
        {
            "layer": [rows[i]["layer"] for i in todo],
            "neuron": [rows[i]["neuron"] for i in todo],
            "item": todo,
            "tokens": [rows[i]["tokens"] for i in todo],
            "activations": [rows[i]["true_activations"] for i in todo],
        },
        schema={
            "layer": pl.Int32,
            "neuron": pl.Int32,
            "item": pl.Int64,
            "tokens": pl.List(pl.Utf8),
            "activations": pl.List(pl.Float32),
        },
    )
    predictions, calls = _simulate_tokens(simulator, current, items, client)
    for item, predicted, call_ids, error in predictions.iter_rows():
        row = rows[item]
        row["call_ids"] = [*row["call_ids"], *call_ids]
        if error is not None:
            row["error"] = f"simulation: {error}"
            continue
        row["predicted"] = predicted
        peak = peaks.get(NeuronId(row["layer"], row["neuron"]), 0.0)
        row["miss"] = max(misses(row["true_activations"], predicted, peak))
    return calls


def mine_counterexamples(
    round_number: int,
    current: pl.DataFrame,
    candidates: pl.DataFrame,
    excluded: pl.DataFrame,
    simulator: SimulatorProfile,
    *,
    client: LLMClient | None,
    peaks: Mapping[NeuronId, float],
    k: int = DEFAULT_SPEC.mine_k,
    min_miss: float = DEFAULT_SPEC.min_miss,
) -> tuple[pl.DataFrame, list[CallResult], pl.DataFrame]:
    """The k worst false positives and k worst false negatives per neuron among `candidates`
    (see `mining_candidates`), under the neuron's current explanation (CURRENT_SCHEMA).

    `excluded` holds each neuron's scoring excerpts (`held_out_excerpts`): a candidate with one
    of their ids, or the very same tokens, is dropped before anything is simulated. An excerpt
    is a false positive when the prediction overshoots more than it falls short, and by at
    least `min_miss`; a false negative the other way round. Returns COUNTEREXAMPLES_SCHEMA rows,
    the simulator's calls, and which neuron each call was made for (`cited`: every candidate
    simulated, kept or not, so that the audit holds every call)."""
    if k < 1 or current.is_empty():
        return pl.DataFrame(schema=COUNTEREXAMPLES_SCHEMA), [], _cited([])
    keys = ["layer", "neuron"]
    allowed = allowed_candidates(current, candidates, excluded)

    by_neuron = {(r["layer"], r["neuron"]): r for r in current.iter_rows(named=True)}
    rows = [
        _row(
            by_neuron[(layer, neuron)],
            round_number,
            simulator,
            source=MINED,
            expected=None,
            text="".join(tokens),
            tokens=tokens,
            true_activations=activations,
            excerpt_id=excerpt_id,
        )
        for layer, neuron, excerpt_id, tokens, activations in allowed.select(
            *keys, "excerpt_id", "tokens", "activations"
        ).iter_rows()
    ]
    calls = _with_predictions(rows, current, simulator, client, peaks)
    kept = []
    for _, group in groupby(rows, key=lambda r: (r["layer"], r["neuron"])):
        scored = []
        for row in group:
            if row["predicted"] is None:
                continue  # a failed simulation says nothing about the explanation
            peak = peaks.get(NeuronId(row["layer"], row["neuron"]), 0.0)
            over, under = misses(row["true_activations"], row["predicted"], peak)
            label = FALSE_POSITIVE if over >= under else FALSE_NEGATIVE
            if max(over, under) >= min_miss:
                scored.append((label, max(over, under), row))
        for label in (FALSE_POSITIVE, FALSE_NEGATIVE):
            worst = sorted(
                (s for s in scored if s[0] == label), key=lambda s: (-s[1], s[2]["excerpt_id"])
            )
            kept += [row | {"expected": label} for _, _, row in worst[:k]]
    check_not_held_out(kept, excluded)
    return pl.DataFrame(kept, schema=COUNTEREXAMPLES_SCHEMA), calls, _cited(rows)


class LeakageError(InputError):
    """A counterexample came from an excerpt its neuron is scored on."""


def check_not_held_out(rows: Sequence[dict], excluded: pl.DataFrame) -> None:
    """Refuse counterexamples that are one of their neuron's held-out (scored) excerpts, by id
    or by text: checked on the result, independently of how the candidates were filtered."""
    if not rows:
        return
    # Only the neurons with counterexamples: a layer's held-out tokens as Python tuples would
    # cost hundreds of MB.
    neurons = pl.DataFrame(
        [(row["layer"], row["neuron"]) for row in rows],
        schema={"layer": excluded.schema["layer"], "neuron": excluded.schema["neuron"]},
        orient="row",
    ).unique()
    excluded = excluded.join(neurons, on=["layer", "neuron"], how="semi")
    held_ids: dict[tuple[int, int], set[int]] = {}
    held_texts: dict[tuple[int, int], set[tuple[str, ...]]] = {}
    for layer, neuron, excerpt_id, tokens in excluded.select(
        "layer", "neuron", "excerpt_id", "tokens"
    ).iter_rows():
        held_ids.setdefault((layer, neuron), set()).add(excerpt_id)
        held_texts.setdefault((layer, neuron), set()).add(tuple(tokens))
    for row in rows:
        key = (row["layer"], row["neuron"])
        if row["excerpt_id"] in held_ids.get(key, ()) or tuple(
            row["tokens"] or ()
        ) in held_texts.get(key, ()):
            raise LeakageError(
                f"neuron {key[0]}/{key[1]}: counterexample excerpt {row['excerpt_id']} is one of "
                "the excerpts the neuron is scored on (calibration, valid or test); it must "
                "never inform a revision"
            )


def _cited(rows: Sequence[dict]) -> pl.DataFrame:
    """(layer, neuron, explainer, call_ids) of rows: which neuron each call was made for."""
    return pl.DataFrame(
        [{key: row[key] for key in ("layer", "neuron", "explainer", "call_ids")} for row in rows],
        schema={
            key: COUNTEREXAMPLES_SCHEMA[key] for key in ("layer", "neuron", "explainer", "call_ids")
        },
    )


def _run_subject(subject: SubjectModel, rows: list[dict], texts_per_pass: int) -> None:
    """Fill `tokens`, `true_activations` and `truncated` of the rows that have a text, a chunk
    of texts per call (each call reads only its chunk's neurons)."""
    todo = [r for r in rows if r["error"] is None and r["text"] is not None]
    for start in range(0, len(todo), texts_per_pass):
        chunk = todo[start : start + texts_per_pass]
        layer_neurons: dict[int, set[int]] = {}
        for row in chunk:
            layer_neurons.setdefault(row["layer"], set()).add(row["neuron"])
        results = probe_texts(
            subject,
            {layer: sorted(n) for layer, n in layer_neurons.items()},
            [r["text"] for r in chunk],
        )
        for row, result in zip(chunk, results, strict=True):
            if not result.tokens:
                row["error"] = "the text has no tokens"
                continue
            row["tokens"] = result.tokens
            row["truncated"] = result.truncated
            row["true_activations"] = result.activations[
                NeuronId(row["layer"], row["neuron"])
            ].tolist()


def check_current(
    current: pl.DataFrame, explainer: ExplainerProfile, simulator: SimulatorProfile
) -> None:
    """Refuse a current-explanations frame (CURRENT_SCHEMA) that another explainer or simulator
    wrote, or that holds a neuron twice: revisions are written by the profile whose
    explanations they revise, and scored by the simulator that scored them."""
    if current.select("layer", "neuron").is_duplicated().any():
        raise InputError("the current explanations hold a neuron twice: one row per neuron")
    for column, profile in (("explainer", explainer), ("simulator", simulator)):
        other = current.filter(
            (pl.col(column) != profile.name) | (pl.col(f"{column}_hash") != profile.hash)
        )
        if other.height:
            row = other.row(0, named=True)
            raise InputError(
                f"{other.height} current explanations belong to {column} {row[column]!r} "
                f"({row[f'{column}_hash']}), not to {profile.name!r} ({profile.hash})"
            )


def find_counterexamples(
    round_number: int,
    current: pl.DataFrame,
    excerpts: pl.DataFrame,
    explainer: ExplainerProfile,
    simulator: SimulatorProfile,
    subject: SubjectModel,
    *,
    explainer_client: LLMClient | None,
    simulator_client: LLMClient | None,
    candidates: pl.DataFrame | None = None,
    spec: RevisionSpec = DEFAULT_SPEC,
    reviser: ExplainerProfile | None = None,
) -> tuple[pl.DataFrame, list[CallResult], pl.DataFrame]:
    """A round's counterexamples for every neuron of `current` (CURRENT_SCHEMA; the neurons'
    explanations as they enter the round), from a neuron_excerpts frame.

    Generated texts come from the explainer (or the template baseline), run through `subject`
    and simulated; mined ones come from `candidates` (default: the train top records; see
    `mining_candidates`) minus the neuron's scoring excerpts. A neuron whose generation gave
    nothing usable gets one generated row with `error` set. Returns COUNTEREXAMPLES_SCHEMA
    rows, every LLM call made (generation, then simulation), and which neuron each call was
    made for (`cited`, mined candidates that were not kept included). `spec` gives the number of
    texts, how many mined excerpts to keep, and the smallest miss that counts. `reviser` writes
    the texts in the explainer's place (`explainer_client` is then its client)."""
    check_current(current, explainer, simulator)
    train = records_by_neuron(excerpts, split="train", kind="top")
    peaks = train_peaks(excerpts)
    texts, calls = generate_texts(
        reviser or explainer,
        current,
        train,
        round_number=round_number,
        n_texts=spec.n_texts,
        tokens_per_text=spec.generation_tokens_per_text,
        client=explainer_client,
    )
    rows = []
    for row in current.iter_rows(named=True):
        generated = texts[NeuronId(row["layer"], row["neuron"])]
        common = {"source": GENERATED, "call_ids": generated.call_ids}
        if generated.error is not None:
            rows.append(
                _row(row, round_number, simulator, expected=None, error=generated.error, **common)
            )
        rows += [
            _row(row, round_number, simulator, expected=expected, text=text, **common)
            for expected, text in generated.pairs
        ]
    _run_subject(subject, rows, spec.texts_per_pass)
    calls += _with_predictions(rows, current, simulator, simulator_client, peaks)
    mined, mining_calls, mined_cited = mine_counterexamples(
        round_number,
        current,
        mining_candidates(excerpts) if candidates is None else candidates,
        held_out_excerpts(excerpts),
        simulator,
        client=simulator_client,
        peaks=peaks,
        k=spec.mine_k,
        min_miss=spec.min_miss,
    )
    frame = pl.concat([pl.DataFrame(rows, schema=COUNTEREXAMPLES_SCHEMA), mined])
    cited = pl.concat([_cited(rows), mined_cited])
    return frame.sort("layer", "neuron", maintain_order=True), calls + mining_calls, cited


def usable_counterexamples(frame: pl.DataFrame) -> dict[NeuronId, list[Counterexample]]:
    """The counterexamples without an error, per neuron, in the frame's order."""
    usable = frame.filter(pl.col("error").is_null() & pl.col("predicted").is_not_null())
    out: dict[NeuronId, list[Counterexample]] = {}
    for layer, neuron, expected, tokens, true, predicted in usable.select(
        "layer", "neuron", "expected", "tokens", "true_activations", "predicted"
    ).iter_rows():
        out.setdefault(NeuronId(layer, neuron), []).append(
            Counterexample(expected, tokens, true, predicted)
        )
    return out
