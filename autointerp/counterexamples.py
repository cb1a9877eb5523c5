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

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

import numpy as np
import polars as pl
import torch

from autointerp.baselines import lexical_model
from autointerp.capture import ActivationHooks
from autointerp.data_model import ActivationRecord, NeuronId
from autointerp.errors import InputError
from autointerp.explanations import EXPLANATIONS_SCHEMA, check_client, records_by_neuron
from autointerp.llm.client import CallResult, LLMClient, LLMRequest
from autointerp.profiles import ExplainerProfile, SimulatorProfile
from autointerp.prompts import explainer_block, few_shot_answer
from autointerp.simulations import simulate
from autointerp.splits import SCORING_SPLITS
from autointerp.subject_model import SubjectModel

GENERATION_PROMPT_VERSION = "counterexamples-v1"

GENERATED, MINED = "generated", "mined"
ACTIVATING, NON_ACTIVATING = "activating", "non-activating"
FALSE_POSITIVE, FALSE_NEGATIVE = "false_positive", "false_negative"

DEFAULT_N_TEXTS = 5  # generated texts of each kind per neuron
DEFAULT_MINE_K = 3  # mined false positives, and as many false negatives, per neuron
DEFAULT_MIN_MISS = 0.2  # a mined excerpt the explanation misses by less is no counterexample
GENERATION_TOKENS_PER_TEXT = 50  # the reply's token budget: this per requested text
TEXTS_PER_PASS = 1024  # generated texts run through the subject model per call (memory bound)

# The frame `find_counterexamples` writes, and `revise_round` reads.
COUNTEREXAMPLES_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,  # the profile that wrote the explanation, the texts and the revision
    "explainer_hash": pl.Utf8,
    "simulator": pl.Utf8,  # the profile that predicted `predicted`
    "simulator_hash": pl.Utf8,
    "round": pl.Int32,
    "explanation": pl.Utf8,  # the explanation these counterexamples test
    "source": pl.Utf8,  # generated | mined
    "expected": pl.Utf8,  # activating | non-activating | false_positive | false_negative
    "text": pl.Utf8,
    "tokens": pl.List(pl.Utf8),
    "true_activations": pl.List(pl.Float32),  # raw, from the subject model
    "predicted": pl.List(pl.Float32),  # the simulator's, 0–10
    "miss": pl.Float64,  # max |min(1, relu(true) / train peak) − predicted / 10|
    "truncated": pl.Boolean,  # a generated text cut to the model's context
    "excerpt_id": pl.Int64,  # mined only
    "call_ids": pl.List(pl.Utf8),  # generation call, then simulation calls
    "error": pl.Utf8,  # null when usable
}

# The current explanation per neuron, as `revise_round` carries it from round to round.
CURRENT_SCHEMA = {
    "layer": pl.Int32,
    "neuron": pl.Int32,
    "explainer": pl.Utf8,
    "explainer_hash": pl.Utf8,
    "sample": pl.Int32,  # the explanations table's sample this lineage started from
    "simulator": pl.Utf8,
    "simulator_hash": pl.Utf8,
    "round": pl.Int32,  # 0: the explanations table itself
    "explanation": pl.Utf8,
    "calibration_score": pl.Float64,  # ev_correlation, top_and_random, calibration split
    "reported_score": pl.Float64,  # ev_correlation, top_and_random, test split
}

GENERATION_SYSTEM_MESSAGE = (
    "This is a study of the neurons of a neural network language model. A neuron responds to "
    "some particular feature of the text it reads. You are shown excerpts on which a neuron "
    "responds strongly, written one token per line in the format token<tab>activation, where "
    "the activation is a whole number from 0 to 10, followed by an explanation of what the "
    "neuron responds to. Test the explanation: write new texts that, if the explanation is "
    "right, should make the neuron respond strongly, and texts that look similar but, if the "
    "explanation is right, should not. Choose texts that would reveal whether the explanation "
    "is too broad or too narrow."
)


@dataclass(frozen=True)
class ChatPrompt:
    """A chat request's messages as plain data, with the version of the template that wrote it."""

    messages: list[dict[str, str]]
    prompt_version: str

    @property
    def prompt_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.messages).encode()).hexdigest()


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


@dataclass(frozen=True)
class TextActivations:
    """One text run through the subject model: its tokens (cut to the context when `truncated`)
    and each requested neuron's activation on every token."""

    tokens: list[str]
    truncated: bool
    activations: dict[NeuronId, np.ndarray]  # float32, one per token


# --- generation ------------------------------------------------------------------------------


def generation_request(
    explanation: str, records: Sequence[ActivationRecord], *, n_texts: int
) -> ChatPrompt:
    """The chat prompt asking the explainer for `n_texts` texts that should activate the neuron
    and `n_texts` similar ones that should not. The records (the neuron's train top records) are
    shown as the explainer saw them, followed by the explanation as the reference writes a
    worked answer."""
    if not records:
        raise InputError("counterexample generation needs the neuron's train top records")
    if n_texts < 1:
        raise InputError(f"n_texts must be >= 1, not {n_texts}")
    request = (
        explainer_block(1, records)
        + few_shot_answer(explanation)
        + f"\n\nWrite {n_texts} texts of one or two sentences that should make this neuron "
        f"respond strongly, and {n_texts} similar-looking texts that should not. Write one text "
        "per line, each line starting with ACTIVATING: or NON-ACTIVATING:, and nothing else."
    )
    return ChatPrompt(
        messages=[
            {"role": "system", "content": GENERATION_SYSTEM_MESSAGE},
            {"role": "user", "content": request},
        ],
        prompt_version=GENERATION_PROMPT_VERSION,
    )


_MARKER = re.compile(r"^\s*(?:[-*•>]+|\(?\d+[.):]|\(?[a-z][.)])\s+", re.I)
_LABEL = re.compile(
    r"^[\W_]*(non[\s_-]*activating|not[\s_-]+activating|negative|activating|positive)"
    r"(?:[\s*_]*[:\]\)\-–—][\s*_:]*|[\s*_]*$)(.*)$",
    re.I,
)
_NEGATION = re.compile(r"\b(?:not?|non|negative|never|near[\s-]*miss\w*)\b|n't\b", re.I)
_QUOTES = ('"', "'", "“", "”", "‘", "’", "`")


def _label(word: str) -> str:
    return (
        NON_ACTIVATING if _NEGATION.search(word) or word.lower().startswith("non") else ACTIVATING
    )


def _clean(text: str) -> str:
    text = text.strip().strip("*_").strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def _heading(line: str) -> str | None:
    """The section a heading line opens ("Texts that should activate it:"), if it is one."""
    bare = line.strip().strip("*_#").strip()
    if bare.endswith(":") and re.search(r"activat|positive|negative", bare, re.I):
        return _label(bare)
    return None


def _from_json(text: str) -> list[tuple[str, str]] | None:
    """Pairs from a JSON reply ({"activating": [...], "non_activating": [...]}), if it is one."""
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pairs = []
    for key, values in data.items():
        if not re.search(r"activat|positive|negative", str(key), re.I):
            continue
        items = values if isinstance(values, list) else [values]
        pairs += [(_label(str(key)), _clean(v)) for v in items if isinstance(v, str)]
    return [(label, text) for label, text in pairs if text]


def parse_generated(text: str) -> list[tuple[str, str]]:
    """(expected, text) pairs from the explainer's reply, expected being "activating" or
    "non-activating", in reply order and without repeats.

    Tolerant of formatting: `ACTIVATING: text` lines (any case, with list numbers, bullets,
    bold or brackets around the label), section headings followed by one text per line
    ("Texts that should not activate it:"), quoted texts, and a JSON object of lists. Lines
    before any label are ignored. An empty list means nothing usable."""
    pairs = _from_json(text)
    if pairs is None:
        pairs, section = [], None
        for raw in text.splitlines():
            line = _MARKER.sub("", raw.strip(), count=1)
            if not line:
                continue
            heading = _heading(line)
            if heading is not None:
                section = heading
                continue
            match = _LABEL.match(line)
            if match:
                label, rest = _label(match[1]), _clean(match[2])
                if rest:
                    pairs.append((label, rest))
                else:
                    section = label
            elif section is not None and (item := _clean(line)):
                pairs.append((section, item))
    return list(dict.fromkeys(pairs))


# The offline baseline's sentences: each is written once with a named token, and again, as a
# near miss, without it or with a look-alike word in its place.
_TEMPLATES = (
    "We talked about {} for a while.",
    "Nobody mentioned {} again after that.",
    "She wrote {} on the first page.",
    "It was {} that changed everything.",
    "Later that night, {} came up once more.",
    "He paused before saying {} out loud.",
)
_CONTEXT_FILLERS = ("one", "thing", "morning")
_VOWELS = "aeiou"


def _look_alike(cue: str) -> str | None:
    """The cue with the first vowel of each word moved two vowels on ("king" -> "kung", "dog"
    -> "dag"): spelled almost the same, but another word. None for a cue that is not all
    letters."""
    words = []
    for word in cue.split():
        position = next((i for i, c in enumerate(word) if c in _VOWELS), None)
        if position is None or not word.isalpha():
            return None
        vowel = _VOWELS[(_VOWELS.index(word[position]) + 2) % len(_VOWELS)]
        words.append(word[:position] + vowel + word[position + 1 :])
    return " ".join(words)


def baseline_generated_texts(explanation: str, *, n_texts: int) -> list[tuple[str, str]]:
    """The offline template baseline's texts: (expected, text) pairs built from
    the tokens and words the explanation names (as the lexical simulator reads them).

    Activating texts put each named token (or a named context followed by a filler word) into
    new sentences; non-activating texts are the same sentences with the token removed or
    replaced by a look-alike word. Deterministic. InputError when the explanation names
    nothing."""
    model = lexical_model(explanation)
    cues = list(model.exact)
    cues += [
        f"{c} {_CONTEXT_FILLERS[i % len(_CONTEXT_FILLERS)]}"
        for i, c in enumerate(sorted(model.contexts))
    ]
    if not cues:
        raise InputError(f"the explanation names no token to write texts from: {explanation!r}")
    pairs = []
    for i in range(n_texts):
        cue, template = cues[i % len(cues)], _TEMPLATES[i % len(_TEMPLATES)]
        pairs.append((ACTIVATING, template.format(cue)))
    for i in range(n_texts):
        cue, template = cues[i % len(cues)], _TEMPLATES[i % len(_TEMPLATES)]
        replacement = _look_alike(cue) if i % 2 else None
        near_miss = template.format(replacement or "")
        pairs.append((NON_ACTIVATING, re.sub(r"\s+([,.])|\s{2,}", r"\1 ", near_miss).strip()))
    return list(dict.fromkeys(pairs))


# --- true activations --------------------------------------------------------------------------


def true_activations(
    subject: SubjectModel,
    layer_neurons: Mapping[int, Sequence[int]],
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
) -> list[TextActivations]:
    """Run `texts` through the subject model and read the requested neurons on every token.

    Texts are tokenized with the model's tokenizer without special tokens (as the corpus is)
    and cut to the model's context (`truncated`). Texts of equal length share a batch, so no
    padding ever reaches the model (exact for bidirectional models too), and each pass serves
    every requested layer. Every requested neuron is read on every text: memory is texts ×
    tokens × neurons, so callers with many texts of different neurons call per group."""
    if not texts:
        return []
    layers = subject.check_layers(layer_neurons)
    columns = {layer: [int(n) for n in layer_neurons[layer]] for layer in layers}
    size = batch_size or subject.spec.batch_size
    limit = subject.context_length
    encoded = subject.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ids = [list(row[:limit]) for row in encoded]
    vocabulary = sorted({i for row in ids for i in row})
    decoded = subject.tokenizer.batch_decode(
        [[i] for i in vocabulary], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    strings = dict(zip(vocabulary, decoded, strict=True))
    # A text with no tokens is never run: its neurons keep an empty array.
    requested = [NeuronId(layer, n) for layer in layers for n in columns[layer]]
    values = [dict.fromkeys(requested, np.zeros(0, dtype=np.float32)) for _ in texts]
    captured: dict[int, torch.Tensor] = {}
    # Templates repeat across neurons: each distinct text runs once, its copies share the result.
    first: dict[tuple[int, ...], int] = {}
    for i, row in enumerate(ids):
        first.setdefault(tuple(row), i)
    distinct = [i for i in first.values() if ids[i]]
    order = sorted(distinct, key=lambda i: (len(ids[i]), i))
    with ActivationHooks(subject, layers, captured.__setitem__) as hooks:
        for _, same_length in groupby(order, key=lambda i: len(ids[i])):
            members = list(same_length)
            for start in range(0, len(members), size):
                batch = members[start : start + size]
                hooks.run(torch.tensor([ids[i] for i in batch], dtype=torch.long))
                for layer in layers:
                    acts = captured.pop(layer)[..., columns[layer]].float().cpu().numpy()
                    for row, i in enumerate(batch):
                        for column, n in enumerate(columns[layer]):
                            values[i][NeuronId(layer, n)] = acts[row, :, column]
    for i, row in enumerate(ids):
        values[i] = values[first[tuple(row)]]
    return [
        TextActivations(
            tokens=[strings[t] for t in ids[i]],
            truncated=len(encoded[i]) > limit,
            activations=values[i],
        )
        for i in range(len(texts))
    ]


# --- simulation and misses -----------------------------------------------------------------


def train_peaks(excerpts: pl.DataFrame) -> dict[NeuronId, float]:
    """Each neuron's largest relu'd activation over its train top records: the scale the
    explainer saw its activations on."""
    return {
        neuron: max((max([0.0, *r.activations]) for r in records), default=0.0)
        for neuron, records in records_by_neuron(excerpts, split="train", kind="top").items()
    }


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


# --- mining ----------------------------------------------------------------------------------


def mining_candidates(
    excerpts: pl.DataFrame,
    *,
    neuron_records: pl.DataFrame | None = None,
    corpus: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Excerpts a neuron's counterexamples may be mined from: its train top records (from a
    neuron_excerpts frame) and, given the neuron_records table and the corpus, its
    quantile-band samples. Columns: layer, neuron, excerpt_id, tokens, activations. Scoring
    excerpts among them are left for `mine_counterexamples` to filter out."""
    columns = ("layer", "neuron", "excerpt_id", "tokens", "activations")
    train = excerpts.filter(pl.col("split") == "train").select(*columns)
    frames = [train.with_columns(pl.col("activations").cast(pl.List(pl.Float32)))]
    if neuron_records is not None and corpus is not None:
        bands = (
            neuron_records.select(
                "layer",
                "neuron",
                excerpt_id="quantile_excerpt_ids",
                activations="quantile_activations",
            )
            .explode("excerpt_id", "activations")
            .explode("excerpt_id", "activations")
            .drop_nulls("excerpt_id")
            .join(corpus.select("excerpt_id", "tokens"), on="excerpt_id", how="inner")
        )
        frames.append(
            bands.select(*columns).cast(
                {"layer": pl.Int32, "neuron": pl.Int32, "excerpt_id": pl.Int64}
            )
        )
    return (
        pl.concat([f.cast({"activations": pl.List(pl.Float32)}) for f in frames])
        .unique(["layer", "neuron", "excerpt_id"], keep="first", maintain_order=True)
        .sort("layer", "neuron", "excerpt_id")
    )


def held_out_excerpts(excerpts: pl.DataFrame) -> pl.DataFrame:
    """Each neuron's calibration, valid and test excerpts (layer, neuron, excerpt_id, tokens):
    what no counterexample of that neuron may come from."""
    return excerpts.filter(pl.col("split").is_in(SCORING_SPLITS)).select(
        "layer", "neuron", "excerpt_id", "tokens"
    )


def _text_key(tokens: pl.Expr) -> pl.Expr:
    return tokens.list.join("\x1f")


def mine_counterexamples(
    round_number: int,
    current: pl.DataFrame,
    candidates: pl.DataFrame,
    excluded: pl.DataFrame,
    simulator: SimulatorProfile,
    *,
    client: LLMClient | None,
    peaks: Mapping[NeuronId, float],
    k: int = DEFAULT_MINE_K,
    min_miss: float = DEFAULT_MIN_MISS,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """The k worst false positives and k worst false negatives per neuron among `candidates`
    (see `mining_candidates`), under the neuron's current explanation (CURRENT_SCHEMA).

    `excluded` holds each neuron's scoring excerpts (`held_out_excerpts`): a candidate with one
    of their ids, or the very same tokens, is dropped before anything is simulated. An excerpt
    is a false positive when the prediction overshoots more than it falls short, and by at
    least `min_miss`; a false negative the other way round. Returns COUNTEREXAMPLES_SCHEMA rows
    and the simulator's calls."""
    if k < 1 or current.is_empty():
        return pl.DataFrame(schema=COUNTEREXAMPLES_SCHEMA), []
    keys = ["layer", "neuron"]
    ours = candidates.join(current.select(keys), on=keys, how="semi")
    held = excluded.select(*keys, "excerpt_id", key=_text_key(pl.col("tokens")))
    allowed = ours.join(held.select(*keys, "excerpt_id"), on=[*keys, "excerpt_id"], how="anti")
    allowed = allowed.with_columns(key=_text_key(pl.col("tokens")))
    allowed = (
        allowed.join(held.select(*keys, "key"), on=[*keys, "key"], how="anti")
        .drop("key")
        .sort(*keys, "excerpt_id")
    )
    leaked = allowed.join(held, on=[*keys, "excerpt_id"], how="semi")
    assert leaked.is_empty(), f"scoring excerpts reached mining: {leaked['excerpt_id'].to_list()}"

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
    return pl.DataFrame(kept, schema=COUNTEREXAMPLES_SCHEMA), calls


# --- a round's counterexamples ---------------------------------------------------------------


@dataclass(frozen=True)
class _Generated:
    """What generation gave one neuron: (expected, text) pairs, the calls behind them, and an
    error when nothing usable came back."""

    pairs: list[tuple[str, str]]
    call_ids: list[str]
    error: str | None = None


def _generated_texts(
    explainer: ExplainerProfile,
    current: pl.DataFrame,
    train: Mapping[NeuronId, list[ActivationRecord]],
    *,
    round_number: int,
    n_texts: int,
    client: LLMClient | None,
) -> tuple[dict[NeuronId, _Generated], list[CallResult]]:
    """Each neuron's generated texts, and the LLM calls made."""
    out: dict[NeuronId, _Generated] = {}
    neurons = [
        NeuronId(layer, neuron) for layer, neuron in current.select("layer", "neuron").iter_rows()
    ]
    explanations = dict(zip(neurons, current["explanation"], strict=True))
    if explainer.kind == "baseline":
        for neuron in neurons:
            try:
                out[neuron] = _Generated(
                    baseline_generated_texts(explanations[neuron], n_texts=n_texts), []
                )
            except InputError as err:
                out[neuron] = _Generated([], [], str(err))
        return out, []

    if client is None:
        raise InputError(f"explainer {explainer.name!r} calls an LLM: it needs a client")
    check_client(client, explainer.model, explainer.base_url)
    asked = []
    for neuron in neurons:
        if neuron not in train:
            out[neuron] = _Generated([], [], "no train top excerpts")
            continue
        asked.append(
            (neuron, generation_request(explanations[neuron], train[neuron], n_texts=n_texts))
        )
    # The round is the sampling seed: a neuron whose explanation survived a round is asked
    # again for new texts, not answered from the cache with the same ones.
    params = {
        "n": 1,
        "max_tokens": GENERATION_TOKENS_PER_TEXT * 2 * n_texts,
        "temperature": explainer.temperature,
        "top_p": explainer.top_p,
        "seed": round_number,
    }
    results = client.run_all([LLMRequest.chat(p.messages, **params) for _, p in asked])
    for (neuron, _), result in zip(asked, results, strict=True):
        if not result.ok:
            out[neuron] = _Generated([], [result.call_id], f"generation: {result.error}")
            continue
        reply = result.text or ""
        pairs = parse_generated(reply)
        # Keep the requested number of each kind: a talkative reply does not outweigh the rest.
        pairs = [p for p in pairs if p[0] == ACTIVATING][:n_texts] + [
            p for p in pairs if p[0] == NON_ACTIVATING
        ][:n_texts]
        error = None if pairs else f"no usable texts in the explainer's reply: {reply[:200]!r}"
        out[neuron] = _Generated(pairs, [result.call_id], error)
    return out, results


def _run_subject(subject: SubjectModel, rows: list[dict]) -> None:
    """Fill `tokens`, `true_activations` and `truncated` of the rows that have a text, a chunk
    of texts per call (each call reads only its chunk's neurons)."""
    todo = [r for r in rows if r["error"] is None and r["text"] is not None]
    for start in range(0, len(todo), TEXTS_PER_PASS):
        chunk = todo[start : start + TEXTS_PER_PASS]
        layer_neurons: dict[int, set[int]] = {}
        for row in chunk:
            layer_neurons.setdefault(row["layer"], set()).add(row["neuron"])
        results = true_activations(
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
    n_texts: int = DEFAULT_N_TEXTS,
    mine_k: int = DEFAULT_MINE_K,
    min_miss: float = DEFAULT_MIN_MISS,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """A round's counterexamples for every neuron of `current` (CURRENT_SCHEMA; the neurons'
    explanations as they enter the round), from a neuron_excerpts frame.

    Generated texts come from the explainer (or the template baseline), run through `subject`
    and simulated; mined ones come from `candidates` (default: the train top records; see
    `mining_candidates`) minus the neuron's scoring excerpts. A neuron whose generation gave
    nothing usable gets one generated row with `error` set. Returns COUNTEREXAMPLES_SCHEMA
    rows and every LLM call made (generation, then simulation)."""
    check_current(current, explainer, simulator)
    train = records_by_neuron(excerpts, split="train", kind="top")
    peaks = train_peaks(excerpts)
    texts, calls = _generated_texts(
        explainer,
        current,
        train,
        round_number=round_number,
        n_texts=n_texts,
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
    _run_subject(subject, rows)
    calls += _with_predictions(rows, current, simulator, simulator_client, peaks)
    mined, mining_calls = mine_counterexamples(
        round_number,
        current,
        mining_candidates(excerpts) if candidates is None else candidates,
        held_out_excerpts(excerpts),
        simulator,
        client=simulator_client,
        peaks=peaks,
        k=mine_k,
        min_miss=min_miss,
    )
    frame = pl.concat([pl.DataFrame(rows, schema=COUNTEREXAMPLES_SCHEMA), mined])
    return frame.sort("layer", "neuron", maintain_order=True), calls + mining_calls


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
