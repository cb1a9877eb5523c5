"""Generated counterexamples: texts the explainer writes to test an explanation (texts that
should activate the neuron strongly, and similar-looking ones that should not), the tolerant
parser of its reply, and the offline template baseline that writes them from the tokens an
explanation names."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from autointerp.activations.data_model import ActivationRecord, NeuronId
from autointerp.config.profiles import ExplainerProfile
from autointerp.errors import InputError
from autointerp.explain.prompt_format import (
    STUDY_INTRO,
    ChatPrompt,
    explainer_block,
    few_shot_answer,
)
from autointerp.llm.client import LLMClient
from autointerp.llm.probe import probe
from autointerp.llm.requests import CallResult, LLMRequest
from autointerp.simulate.baseline import lexical_model

GENERATION_PROMPT_VERSION = "counterexamples-v1"
ACTIVATING, NON_ACTIVATING = "activating", "non-activating"

GENERATION_SYSTEM_MESSAGE = (
    f"{STUDY_INTRO} You are shown excerpts on which a neuron "
    "responds strongly, written one token per line in the format token<tab>activation, where "
    "the activation is a whole number from 0 to 10, followed by an explanation of what the "
    "neuron responds to. Test the explanation: write new texts that, if the explanation is "
    "right, should make the neuron respond strongly, and texts that look similar but, if the "
    "explanation is right, should not. Choose texts that would reveal whether the explanation "
    "is too broad or too narrow."
)


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


@dataclass(frozen=True)
class Generated:
    """What generation gave one neuron: (expected, text) pairs, the calls behind them, and an
    error when nothing usable came back."""

    pairs: list[tuple[str, str]]
    call_ids: list[str]
    error: str | None = None


def generate_texts(
    explainer: ExplainerProfile,
    current: pl.DataFrame,
    train: Mapping[NeuronId, list[ActivationRecord]],
    *,
    round_number: int,
    n_texts: int,
    tokens_per_text: int,
    client: LLMClient | None,
) -> tuple[dict[NeuronId, Generated], list[CallResult]]:
    """Each neuron's generated texts (`n_texts` of each kind; the reply's budget is
    `tokens_per_text` per text asked), and the LLM calls made."""
    out: dict[NeuronId, Generated] = {}
    neurons = [
        NeuronId(layer, neuron) for layer, neuron in current.select("layer", "neuron").iter_rows()
    ]
    explanations = dict(zip(neurons, current["explanation"], strict=True))
    if explainer.kind == "baseline":
        for neuron in neurons:
            try:
                out[neuron] = Generated(
                    baseline_generated_texts(explanations[neuron], n_texts=n_texts), []
                )
            except InputError as err:
                out[neuron] = Generated([], [], str(err))
        return out, []

    if client is None:
        raise InputError(f"explainer {explainer.name!r} calls an LLM: it needs a client")
    client.check_serves(explainer.model, explainer.base_url)
    asked = []
    for neuron in neurons:
        if neuron not in train:
            out[neuron] = Generated([], [], "no train top excerpts")
            continue
        asked.append(
            (neuron, generation_request(explanations[neuron], train[neuron], n_texts=n_texts))
        )
    # The round is the sampling seed: a neuron whose explanation survived a round is asked
    # again for new texts, not answered from the cache with the same ones.
    params = {
        "n": 1,
        "max_tokens": tokens_per_text * 2 * n_texts,
        "temperature": explainer.temperature,
        "top_p": explainer.top_p,
        "seed": round_number,
    }
    llm_requests = [LLMRequest.chat(p.messages, **params) for _, p in asked]
    probe(client, llm_requests)
    results = client.run_all(llm_requests, label=f"round {round_number}: counterexample texts")
    for (neuron, _), result in zip(asked, results, strict=True):
        if not result.ok:
            out[neuron] = Generated([], [result.call_id], f"generation: {result.error}")
            continue
        reply = result.text or ""
        pairs = parse_generated(reply)
        # Keep the requested number of each kind: a talkative reply does not outweigh the rest.
        pairs = [p for p in pairs if p[0] == ACTIVATING][:n_texts] + [
            p for p in pairs if p[0] == NON_ACTIVATING
        ][:n_texts]
        error = None if pairs else f"no usable texts in the explainer's reply: {reply[:200]!r}"
        out[neuron] = Generated(pairs, [result.call_id], error)
    return out, results
