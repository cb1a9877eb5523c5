"""The offline baselines: an explainer and a simulator that need no LLM.

They are baselines, not the method: no capable generative model ships offline, so these give the
pipeline something honest to run and score on a machine with no API key. Their names say so in
every table they reach.

- `token-statistics-baseline` (explainer): which tokens, and which preceding tokens, carry much
  more of the neuron's activation in its top excerpts than their share of random excerpts,
  written as a short explanation that quotes them.
- `lexical-baseline` (simulator): predicts each token's activation from the words and quoted
  strings an explanation names, for any explanation, LLM-written ones included.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from autointerp.data_model import ActivationRecord

TOKEN_STATISTICS_EXPLAINER = "token-statistics-baseline"
LEXICAL_SIMULATOR = "lexical-baseline"
BASELINE_VERSION = "baselines-v1"


@lru_cache(maxsize=1 << 17)
def normalize_token(token: str) -> str:
    """Lowercased, without the space markers of BPE ("Ġ") and SentencePiece ("▁") vocabularies
    or surrounding whitespace."""
    return token.lstrip("Ġ▁ ").strip().lower()


@lru_cache(maxsize=1 << 17)
def stem(word: str) -> str:
    """A crude suffix-stripping stem, enough to match "ships" to "ship" and "sailing" to
    "sails"; words that are not alphabetic are their own stem."""
    if not word.isalpha():
        return word
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        base = word[: len(word) - len(suffix)]
        if not word.endswith(suffix) or len(base) + len(replacement) < 3 or base.endswith("s"):
            continue
        if suffix in ("ing", "ed") and len(base) > 3 and base[-1] == base[-2]:
            base = base[:-1]  # "shipping" -> "shipp" -> "ship"
        return base + replacement
    return word


# --- token-statistics explainer ------------------------------------------------------------


@dataclass(frozen=True)
class _Distinctive:
    text: str
    contribution: float  # share of activation mass × log-odds against the random base rate
    share: float  # share of the top excerpts' activation mass


def _distinctive(mass: Counter[str], counts: Counter[str], smoothing: float) -> list[_Distinctive]:
    """Items whose share of activation mass most exceeds their share of random tokens.

    The score is the item's term in KL(top ‖ random): share · log(smoothed share / smoothed
    base rate), so an item must both carry much of the activation and be rarer at random.
    """
    total_mass, total_count = sum(mass.values()), sum(counts.values())
    if total_mass <= 0:
        return []
    vocabulary = len(mass.keys() | counts.keys())
    items = []
    for text, m in mass.items():
        if m <= 0:
            continue
        top_rate = (m + smoothing) / (total_mass + smoothing * vocabulary)
        base_rate = (counts[text] + smoothing) / (total_count + smoothing * vocabulary)
        share = m / total_mass
        items.append(_Distinctive(text, share * math.log(top_rate / base_rate), share))
    return sorted((i for i in items if i.contribution > 0), key=lambda i: (-i.contribution, i.text))


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def explain_by_token_statistics(
    top_records: Sequence[ActivationRecord],
    random_records: Sequence[ActivationRecord],
    *,
    max_tokens: int = 5,
    smoothing: float = 0.5,
) -> str:
    """A short, deterministic explanation from token statistics (the baseline explainer).

    Activation mass is each token's relu'd activation over the top records' maximum. A token
    (normalized) is named when its KL term is at least a fifth of the best token's; a preceding
    token is named as context when it carries at least 30% of the mass, and leads the
    explanation when its KL term exceeds those of the named tokens together (as for "the word
    after Mr", where the words themselves vary).
    """
    peak = max((max(r.activations, default=0.0) for r in top_records), default=0.0)
    if not peak > 0:
        return "nothing (no positive activations on its top excerpts)"
    token_mass: Counter[str] = Counter()
    context_mass: Counter[str] = Counter()
    for record in top_records:
        norms = [normalize_token(t) for t in record.tokens]
        for i, (norm, activation) in enumerate(zip(norms, record.activations, strict=True)):
            weight = max(float(activation), 0.0) / peak
            if norm:
                token_mass[norm] += weight
            if i and norms[i - 1]:
                context_mass[norms[i - 1]] += weight
    token_counts: Counter[str] = Counter()
    context_counts: Counter[str] = Counter()
    for record in random_records:
        norms = [normalize_token(t) for t in record.tokens]
        token_counts.update(n for n in norms if n)
        context_counts.update(n for n in norms[:-1] if n)

    tokens = _distinctive(token_mass, token_counts, smoothing)
    contexts = [c for c in _distinctive(context_mass, context_counts, smoothing) if c.share >= 0.3]
    if not tokens:
        return "nothing distinctive (no token is more frequent where it fires than at random)"
    named = [t for t in tokens if t.contribution >= 0.2 * tokens[0].contribution][:max_tokens]
    if contexts and contexts[0].contribution > sum(t.contribution for t in named):
        # Examples only when they stand out on their own: a simulator reading them would
        # otherwise predict them everywhere.
        context = contexts[0]
        examples = [t for t in tokens if t.contribution >= 0.5 * context.contribution]
        explanation = f"the token right after {_quote(context.text)}"
        if examples:
            listed = ", ".join(_quote(t.text) for t in examples[:max_tokens])
            explanation += f" (such as {listed})"
        return explanation
    listed = ", ".join(_quote(t.text) for t in named)
    noun = "token" if len(named) == 1 else "tokens"
    explanation = f"the {noun} {listed}"
    if contexts:
        explanation += f" (often after {_quote(contexts[0].text)})"
    return explanation


# --- lexical simulator ---------------------------------------------------------------------

QUOTED_WEIGHT = 10.0  # a token that is a quoted string of the explanation
QUOTED_STEM_WEIGHT = 7.0  # a token sharing a quoted word's stem
WORD_WEIGHT = 4.0  # a token matching an unquoted content word
CONTEXT_WEIGHT = 3.0  # added to the token right after a quoted context ('after "Mr"')

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
def lexical_model(explanation: str) -> LexicalModel:
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
            add(text, QUOTED_WEIGHT, QUOTED_STEM_WEIGHT)
        previous_end, previous_was_context = match.end(), is_context
    unquoted = _QUOTED.sub(" ", explanation)
    for word in re.findall(r"[A-Za-z][A-Za-z'-]*", unquoted):
        word = word.lower()
        if word not in _STOPWORDS and len(word) > 1:
            add(word, WORD_WEIGHT, WORD_WEIGHT)
    return LexicalModel(exact=exact, stems=stems, contexts=frozenset(contexts))


def simulate_lexical(explanation: str, tokens: Sequence[str]) -> list[float]:
    """Predicted activation (0–10) of each token under an explanation: the baseline simulator."""
    model = lexical_model(explanation)
    predictions = []
    previous = ""
    for token in tokens:
        norm = normalize_token(token)
        if not norm:  # whitespace carries no word, and does not break "after X"
            predictions.append(0.0)
            continue
        weight = max(model.exact.get(norm, 0.0), model.stems.get(stem(norm), 0.0))
        if previous in model.contexts:
            weight += CONTEXT_WEIGHT
        predictions.append(min(weight, 10.0))
        previous = norm
    return predictions


def simulate_lexical_many(explanation: str, excerpts: Sequence[Sequence[str]]) -> list[list[float]]:
    """simulate_lexical over several excerpts, parsing the explanation once."""
    return [simulate_lexical(explanation, tokens) for tokens in excerpts]
