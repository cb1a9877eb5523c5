"""The offline baseline reviser (no LLM), deterministic: it reruns the token-statistics explainer
with the counterexamples added to its evidence (false negatives and strongly firing texts as
activating evidence, texts where nothing fired as reference), after dropping the cues that
produced false positives: tokens the simulator predicted high that repeatedly did not fire. It is
a baseline: on real neurons its gains are small, and the keep rule is what stops its losses.
Its thresholds are settings of `[revisions]` (RevisionSpec)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from autointerp.activations.data_model import ActivationRecord, peak_activation
from autointerp.config.settings import RevisionSpec
from autointerp.explain.baseline import explain_by_token_statistics
from autointerp.revise.counterexamples import FALSE_NEGATIVE, Counterexample
from autointerp.token_text import normalize_token

DEFAULT_SPEC = RevisionSpec()


def false_positive_cues(
    counterexamples: Sequence[Counterexample], peak: float, spec: RevisionSpec = DEFAULT_SPEC
) -> set[str]:
    """Normalized tokens the simulator predicted high (>= spec.high_prediction) on the
    counterexamples where the neuron did not fire (below spec.fired of `peak`) at least
    spec.min_misfires times, and more than spec.misfire_ratio times as often as where it did."""
    misfires: Counter[str] = Counter()
    fires: Counter[str] = Counter()
    for counterexample in counterexamples:
        for token, true, predicted in zip(
            counterexample.tokens,
            counterexample.true_activations,
            counterexample.predicted,
            strict=True,
        ):
            if predicted < spec.high_prediction or not (key := normalize_token(token)):
                continue
            fired = peak > 0 and max(float(true), 0.0) >= spec.fired * peak
            (fires if fired else misfires)[key] += 1
    return {
        key
        for key, count in misfires.items()
        if count >= spec.min_misfires and count > spec.misfire_ratio * fires[key]
    }


def _without(record: ActivationRecord, cues: set[str]) -> ActivationRecord:
    """The record with the activations of the cue tokens zeroed."""
    activations = [
        0.0 if normalize_token(token) in cues else activation
        for token, activation in zip(record.tokens, record.activations, strict=True)
    ]
    return ActivationRecord(record.tokens, activations)


def revise_by_token_statistics(
    top_records: Sequence[ActivationRecord],
    reference_records: Sequence[ActivationRecord],
    counterexamples: Sequence[Counterexample],
    spec: RevisionSpec = DEFAULT_SPEC,
) -> str:
    """The offline baseline revision, deterministic: the token-statistics explainer over the
    train top records plus the false negatives and strongly activating counterexamples
    (cues added), against the reference records plus the counterexamples where nothing fired
    (their tokens' base rates raised), with the false-positive cues' activations zeroed so they
    are no longer named (cues removed)."""
    peak = peak_activation(top_records)
    cues = false_positive_cues(counterexamples, peak, spec)
    shown = {tuple(r.tokens) for r in top_records}
    # Mined train records are already among the top records: counted once.
    new = [c for c in counterexamples if tuple(c.tokens) not in shown]
    # Weakly firing texts stay out of the evidence: what little fires in a template sentence
    # is mostly its filler words.
    added = [
        c.record
        for c in new
        if c.expected == FALSE_NEGATIVE or peak_activation([c.record]) >= spec.strong * peak
    ]
    quiet = [c.record for c in new if peak > 0 and peak_activation([c.record]) < spec.fired * peak]
    evidence = [_without(r, cues) for r in [*top_records, *added]]
    return explain_by_token_statistics(evidence, [*reference_records, *quiet])
