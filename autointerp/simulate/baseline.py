"""The offline baseline simulator, `lexical-baseline`: no LLM.

It predicts each token's activation (0–10) from the words and quoted strings an explanation
names, for any explanation, LLM-written ones included. It is a baseline, not the method, and its
name says so in every table it reaches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from autointerp.token_text import normalize_token, stem

LEXICAL_SIMULATOR = "lexical-baseline"


@dataclass(frozen=True)
class LexicalWeights:
    """How strongly each kind of match predicts activation, on the 0–10 scale (capped at 10)."""

    quoted: float = 10.0  # a token that is a quoted string of the explanation
    quoted_stem: float = 7.0  # a token sharing a quoted word's stem
    word: float = 4.0  # a token matching an unquoted content word
    context: float = 3.0  # added to the token right after a quoted context ('after "Mr"')


DEFAULT_WEIGHTS = LexicalWeights()

# Function words and the vocabulary explanations are written in, which name no token.
_STOPWORDS = frozenset(
    """a about above after again all also an and any are as at be because been before being
    between both but by can could did do does doing during each either etc every few for from
    further had has have having here how i if in into is it its itself just least less like
    many may more most much must my near next no nor not of off often on once one only or other
    our out over own per previous rather right same several should since so some such than that
    the their them then there these they this those through to too under until up upon very
    was we were what when where whether which while who whom whose why will with within without
    would you your activation activations activate activates appear appearing appears case
    cases concept concepts context contexts different directly especially example examples
    find finds first following found frequently immediately include includes including
    indicate indicates instance instances language mention mentions mentioned neuron nothing
    occurrence occurrences particular particularly pattern patterns phrase phrases positive
    preceded reference references related relating sequence sequences specific text texts
    token tokens type types typically usually use used various word words""".split()  # noqa: SIM905
)
_QUOTED = re.compile(
    r'"((?:[^"\\\n]|\\.)+)"|“([^”\n]+)”|‘([^’\n]+)’|`([^`\n]+)`|(?<![\w])\'([^\'\n]+)\'(?!\w)'
)
# Text between a context keyword and its quote: 'after "Mr"', 'following the word "the"'.
_CONTEXT_CUE = re.compile(r"\b(?:after|following|preceded by)(?:\s+[\w-]+){0,3}\s*$", re.I)
_LIST_GLUE = re.compile(r"^\s*(?:,|/|or|and|,\s*or|,\s*and)\s*$", re.I)
_PIECES = re.compile(r"\w+|[^\w\s]+")


@dataclass(frozen=True)
class LexicalModel:
    """What the lexical simulator reads from one explanation."""

    exact: dict[str, float]  # normalized token -> weight
    stems: dict[str, float]  # stem -> weight
    contexts: frozenset[str]  # normalized tokens whose next token is predicted


def _unquote(match: re.Match[str]) -> str:
    double, *others = match.groups()
    if double is None:
        return next(g for g in others if g is not None)
    try:
        return json.loads(f'"{double}"')
    except json.JSONDecodeError:
        return double


@lru_cache(maxsize=4096)
def lexical_model(explanation: str, weights: LexicalWeights = DEFAULT_WEIGHTS) -> LexicalModel:
    """Parse an explanation once: quoted strings (as contexts when introduced by "after",
    "following" or "preceded by", or listed after such a string) and unquoted content words."""
    exact: dict[str, float] = {}
    stems: dict[str, float] = {}
    contexts: set[str] = set()

    def add(text: str, weight: float, stem_weight: float) -> None:
        for piece in _PIECES.findall(text) if " " in text.strip() else [text]:
            norm = normalize_token(piece)
            if not norm:
                continue
            exact[norm] = max(exact.get(norm, 0.0), weight)
            stems[stem(norm)] = max(stems.get(stem(norm), 0.0), stem_weight)

    previous_end, previous_was_context = 0, False
    for match in _QUOTED.finditer(explanation):
        between = explanation[previous_end : match.start()]
        is_context = bool(_CONTEXT_CUE.search(between)) or (
            previous_was_context and bool(_LIST_GLUE.match(between))
        )
        text = _unquote(match)
        if is_context:
            contexts.update(n for n in (normalize_token(p) for p in text.split()) if n)
        else:
            add(text, weights.quoted, weights.quoted_stem)
        previous_end, previous_was_context = match.end(), is_context
    unquoted = _QUOTED.sub(" ", explanation)
    for word in re.findall(r"[A-Za-z][A-Za-z'-]*", unquoted):
        word = word.lower()
        if word not in _STOPWORDS and len(word) > 1:
            add(word, weights.word, weights.word)
    return LexicalModel(exact=exact, stems=stems, contexts=frozenset(contexts))


def simulate_lexical(
    explanation: str, tokens: Sequence[str], weights: LexicalWeights = DEFAULT_WEIGHTS
) -> list[float]:
    """Predicted activation (0–10) of each token under an explanation: the baseline simulator."""
    model = lexical_model(explanation, weights)
    predictions = []
    previous = ""
    for token in tokens:
        norm = normalize_token(token)
        if not norm:  # whitespace carries no word, and does not break "after X"
            predictions.append(0.0)
            continue
        weight = max(model.exact.get(norm, 0.0), model.stems.get(stem(norm), 0.0))
        if previous in model.contexts:
            weight += weights.context
        predictions.append(min(weight, 10.0))
        previous = norm
    return predictions
