"""Few-shot sets: worked neurons shown before the target in every prompt (explainer, simulator).

A set is named in a profile (`few_shot = "default"`); its content hash is part of the profile's
hash, so editing a set marks everything written with it unsynced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.activations.data_model import ActivationRecord
from autointerp.errors import InputError
from autointerp.storage.hashing import digest


@dataclass(frozen=True)
class FewShotNeuron:
    """A worked example: a neuron's records with raw activations, and its explanation.

    `first_revealed` gives, per record, the index of the first token whose activation the
    all-at-once simulator prompt reveals; earlier ones read `unknown` there, as in the
    reference, so that the model learns to put its probability on numbers at `unknown`.
    """

    records: tuple[ActivationRecord, ...]
    explanation: str
    first_revealed: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.first_revealed and len(self.first_revealed) != len(self.records):
            raise InputError("first_revealed needs one index per record")


def _record(pairs: Sequence[tuple[str, float]]) -> ActivationRecord:
    return ActivationRecord(tokens=[t for t, _ in pairs], activations=[a for _, a in pairs])


# Three neurons written for this project: a syntactic one (closing brackets), a topical one (the
# sea) and a contextual one (the surname after a title). Activations are in raw units, as the
# subject model would give them, and are normalized like any target's.
# fmt: off
_DEFAULT_FEW_SHOT: tuple[FewShotNeuron, ...] = (
    FewShotNeuron(
        records=(
            _record([("The", 0), (" function", 0), (" returns", 0), (" a", 0), (" list", 0),
                     (" (", 0), ("or", 0), (" None", 0), (")", 3.1), (" when", 0), (" the", 0),
                     (" input", 0), (" is", 0), (" empty", 0), (".", 0.2)]),
            _record([("x", 0), (" =", 0), (" max", 0), ("(", 0.1), ("values", 0), ("[", 0),
                     ("i", 0), ("],", 2.6), (" key", 0), ("=", 0), ("abs", 0), (")", 3.4),
                     (" +", 0), (" 1", 0)]),
            _record([("See", 0), (" the", 0), (" appendix", 0), (" [", 0), ("3", 0), ("]", 2.9),
                     (" for", 0), (" details", 0), (" (", 0), ("page", 0), (" 12", 0.3),
                     (").", 3.2)]),
        ),
        explanation="closing parentheses and square brackets",
        first_revealed=(4, 2, 6),
    ),
    FewShotNeuron(
        records=(
            _record([("The", 0), (" old", 0), (" sailor", 4.2), (" watched", 0), (" the", 0),
                     (" ship", 5.0), (" drift", 0.4), (" slowly", 0), (" out", 0), (" of", 0),
                     (" the", 0), (" harbor", 3.8), (".", 0)]),
            _record([("We", 0), (" spent", 0), (" the", 0), (" summer", 0), (" by", 0),
                     (" the", 0), (" ocean", 4.6), (",", 0), (" fishing", 1.9), (" from", 0),
                     (" a", 0), (" small", 0), (" boat", 4.1), (".", 0)]),
            _record([("Waves", 3.5), (" crashed", 0.6), (" against", 0), (" the", 0),
                     (" hull", 4.4), (" as", 0), (" the", 0), (" crew", 2.7), (" lowered", 0.3),
                     (" the", 0), (" sails", 4.8), (".", 0)]),
        ),
        explanation="words about the sea, ships and sailing",
        first_revealed=(3, 6, 1),
    ),
    FewShotNeuron(
        records=(
            _record([("Yesterday", 0), (" Mr", 0), (".", 0.4), (" Hall", 6.1), ("ett", 1.2),
                     (" met", 0), (" with", 0), (" Mrs", 0), (".", 0.5), (" Patel", 6.8),
                     (" to", 0), (" discuss", 0), (" the", 0), (" budget", 0), (".", 0)]),
            _record([('"', 0), ("Thank", 0), (" you", 0), (",", 0), (" Dr", 0), (".", 0.3),
                     (" Owens", 5.9), (',"', 0.2), (" said", 0), (" the", 0), (" nurse", 0),
                     (".", 0)]),
            _record([("Letters", 0), (" addressed", 0), (" to", 0), (" Ms", 0.2),
                     (" Rivera", 6.3), (" arrived", 0), (" on", 0), (" Monday", 0), (".", 0)]),
        ),
        explanation="surnames that come right after a title such as Mr, Mrs, Ms or Dr",
        first_revealed=(2, 5, 3),
    ),
)
# fmt: on

FEW_SHOT_SETS: dict[str, tuple[FewShotNeuron, ...]] = {"default": _DEFAULT_FEW_SHOT}

FewShot = str | Sequence[FewShotNeuron]


def resolve_few_shot(few_shot: FewShot) -> tuple[FewShotNeuron, ...]:
    """A few-shot set by name (see FEW_SHOT_SETS), or the given neurons themselves."""
    if isinstance(few_shot, str):
        if few_shot not in FEW_SHOT_SETS:
            raise InputError(
                f"unknown few-shot set {few_shot!r}; known sets: {', '.join(sorted(FEW_SHOT_SETS))}"
            )
        return FEW_SHOT_SETS[few_shot]
    return tuple(few_shot)


def few_shot_hash(few_shot: FewShot) -> str:
    """A content hash (sha256 hex) of a few-shot set, for cache keys and lineage."""
    content = [
        {
            "explanation": n.explanation,
            "records": [[r.tokens, [float(a) for a in r.activations]] for r in n.records],
            "first_revealed": list(n.first_revealed),
        }
        for n in resolve_few_shot(few_shot)
    ]
    return digest(content)
