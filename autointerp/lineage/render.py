"""The lineage for people and programs: text for a terminal, plain JSON for tools. Corpus and
LLM text is untrusted: the terminal text shows its control characters as escapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from autointerp.lineage.chain import Lineage, LLMCall, RevisionRound, ScoreChain
from autointerp.safe_text import printable


def to_json(lineage: Lineage) -> dict[str, Any]:
    """The lineage as plain JSON data (undefined scores as null)."""
    return _json_safe(asdict(lineage))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def render_text(lineage: Lineage, *, width: int = 100) -> str:
    """The lineage for a terminal: one indented block per score chain, upstream last."""
    lines = [f"Neuron {lineage.layer}/{lineage.neuron} of {lineage.model_prefix}"]
    printed: set[str] = set()  # calls whose prompt is already shown: samples share a call
    for chain in lineage.chains:
        lines += _render_chain(chain, width, printed)
    return printable("\n".join(lines))  # corpus and LLM text: never raw to a terminal


def _render_chain(chain: ScoreChain, width: int, printed: set[str]) -> list[str]:
    def clip(text: str | None, indent: int) -> str:
        flat = "(not in the corpus table)" if text is None else " ".join(text.split())
        room = max(20, width - indent)
        return flat if len(flat) <= room else flat[: room - 1] + "…"

    lines = [
        "",
        f"  explainer {chain.explainer}@{chain.explainer_hash} sample {chain.sample}"
        f" -> simulator {chain.simulator}@{chain.simulator_hash}",
        f"    scores (run {chain.dagster_run_id or 'not recorded'}, "
        f"code version {chain.code_version or 'not recorded'}):",
    ]
    order = {split: i for i, split in enumerate(("calibration", "valid", "test"))}
    for s in sorted(chain.scores, key=lambda s: (order.get(s.split, 3), s.split, s.scored_on)):
        # rsquared and absolute deviation explained mean something on the neuron's own scale
        # only: shown where the predictions were calibrated to it.
        scale = (
            f"  rsquared {_fmt(s.rsquared)}  abs_dev_explained "
            f"{_fmt(s.absolute_dev_explained)} (calibrated)"
            if s.calibrated
            else ""
        )
        missing = f", {s.missing_tokens} tokens unanswered" if s.missing_tokens else ""
        lines.append(
            f"      {s.split:<11} {s.scored_on:<14} ev_correlation {_fmt(s.ev_correlation)}"
            f"{scale}  ({len(s.excerpt_ids)} excerpts{missing})"
        )
    explanation = chain.explanation
    if explanation is None:
        lines.append("    explanation: no longer in the explanations table")
    else:
        lines += [
            f"    explanation: {explanation.text!r}"
            + (f"  error: {explanation.error}" if explanation.error else ""),
            f"      prompt hash {explanation.prompt_hash or '-'}, "
            f"calls {', '.join(explanation.call_ids) or 'none (baseline)'}",
        ]
    if chain.imported_files:
        lines.append(f"    imported from: {', '.join(chain.imported_files)}")
    for call in chain.explainer_calls:
        lines += _render_call(call, "      ")
        if call.call_id in printed:
            lines.append("        (prompt and completions as shown above)")
            continue
        printed.add(call.call_id)
        lines += ["        prompt:"] + [f"          {line}" for line in call.prompt.splitlines()]
        for i, text in enumerate(call.response_texts):
            lines.append(f"        completion {i}: {text!r}")
    lines.append(f"    the explainer saw {len(chain.shown_excerpts)} train top excerpts:")
    for e in chain.shown_excerpts:
        head = f"      #{e.rank} excerpt {e.excerpt_id} max {e.max_activation:.3g}: "
        lines.append(head + clip(e.text, len(head)))
    lines.append(f"    simulated on {len(chain.simulations)} excerpts (true max / expected max):")
    for e in chain.simulations:
        expected = (
            f"{max(e.expected_activations, default=0):.3g}"
            if e.expected_activations is not None
            else f"error: {e.error}"
        )
        head = (
            f"      {e.split:<11} {e.kind:<6} excerpt {e.excerpt_id}: "
            f"{max(e.true_activations, default=0):.3g} / {expected}  "
        )
        lines.append(head + clip(e.text, len(head)))
    if chain.simulator_calls:
        lines.append(f"    {len(chain.simulator_calls)} simulator calls:")
        for call in chain.simulator_calls:
            lines += _render_call(call, "      ")
    lines.append("    tables read (version; the commit that wrote these rows):")
    for read in chain.tables:
        if read.version is None:
            lines.append(f"      {read.table:<16} not materialized")
            continue
        how = "recorded on the score" if read.recorded else "latest"
        commit = read.written_by
        wrote = (
            f"commit {commit.version} at {commit.timestamp}, run "
            f"{commit.dagster_run_id or '-'}, code version {commit.code_version or '-'}"
            if commit
            else "writer not found in the history"
        )
        lines.append(f"      {read.table:<16} v{read.version} ({how}); {wrote}")
    return lines


def _render_call(call: LLMCall, indent: str) -> list[str]:
    tokens = f"{call.prompt_tokens or 0}+{call.completion_tokens or 0} tokens"
    return [
        f"{indent}call {call.call_id}: {call.kind} {call.model} at "
        f"{call.endpoint or 'OpenAI'}, {call.status}, {tokens}"
        + (f", error: {call.error}" if call.error else "")
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def render_revisions(rounds: Sequence[RevisionRound]) -> str:
    lines = []
    for r in rounds:
        verdict = "kept" if r.kept else "not kept"
        lines.append(
            f"round {r.round} ({r.explainer}): {verdict}; calibration "
            f"{_fmt(r.previous_score)} -> {_fmt(r.candidate_score)}; test now "
            f"{_fmt(r.reported_score)}"
        )
        lines.append(f"  before:  {r.previous_explanation}")
        lines.append(f"  revised: {r.revised_explanation}" + (f"  ({r.error})" if r.error else ""))
        for c in r.counterexamples:
            text = (c["text"] or "").replace("\n", " ")[:80]
            error = f"  ({c['error']})" if c.get("error") else ""
            # A counterexample whose generation failed has no expected kind, source or text.
            lines.append(
                f"    {c['source'] or '-':9} {c['expected'] or '-':15} miss {_fmt(c['miss'])}  "
                f"{text}{error}"
            )
    return printable("\n".join(lines))  # corpus and LLM text: never raw to a terminal


def revisions_json(rounds: Sequence[RevisionRound]) -> list[dict[str, Any]]:
    """Plain JSON of the rounds, NaN as null."""
    return [_json_safe(asdict(r)) for r in rounds]
