"""The offline baseline explainer, `token-statistics-baseline`: no LLM.

It is a baseline, not the method: no capable generative model ships offline, so this gives the
pipeline something honest to run and score on a machine with no API key. Its name says so in
every table it reaches. Which tokens, and which preceding tokens, carry much more of the neuron's
activation in its top excerpts than their share of random excerpts, written as a short
explanation that quotes them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.activations.data_model import ActivationRecord, peak_activation
from autointerp.token_text import normalize_token

TOKEN_STATISTICS_EXPLAINER = "token-statistics-baseline"
# Names the baselines' logic in their profiles' hashes: bump it when their output changes.
BASELINE_VERSION = "baselines-v1"


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
    peak = peak_activation(top_records)
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
