"""The lineage of a score as plain data: the chain from a score back to its inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Commit:
    """One Delta commit and the Dagster run that made it (None where not recorded)."""

    version: int
    timestamp: str  # ISO 8601, UTC
    operation: str
    dagster_run_id: str | None
    dagster_asset_key: str | None
    code_version: str | None


@dataclass(frozen=True)
class TableRead:
    """A table as the chain read it."""

    table: str
    version: int | None  # None: the table has never been written
    recorded: bool  # the version is the one recorded on the score rows (else: latest, now)
    written_by: Commit | None  # the newest commit at or before `version` that wrote these rows


@dataclass(frozen=True)
class LLMCall:
    call_id: str
    request_hash: str
    kind: str  # chat | completion
    model: str
    endpoint: str | None  # base_url; None is OpenAI
    status: str  # ok | cached | error
    cached: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    prompt: str  # the messages or the prompt as sent
    params: dict[str, Any]  # sampling parameters as sent
    response_texts: list[str]  # one per choice
    error: str | None


@dataclass(frozen=True)
class Explanation:
    text: str | None  # None when the explainer's row is an error
    prompt_hash: str | None
    call_ids: list[str]
    error: str | None


@dataclass(frozen=True)
class ShownExcerpt:
    """A train top excerpt: what the explainer saw."""

    excerpt_id: int
    rank: int
    max_activation: float
    text: str | None  # None when the corpus table is missing or lacks the excerpt


@dataclass(frozen=True)
class SimulatedExcerpt:
    """A scored excerpt: the neuron's true activations and the simulator's expected ones."""

    excerpt_id: int
    split: str
    kind: str  # top | random
    text: str | None
    true_activations: list[float]
    expected_activations: list[float] | None  # None when the simulation failed
    call_ids: list[str]
    error: str | None


@dataclass(frozen=True)
class Score:
    split: str
    scored_on: str
    ev_correlation: float
    rsquared: float
    absolute_dev_explained: float
    calibrated: bool  # rsquared and absolute_dev_explained are on the neuron's scale only if so
    excerpt_ids: list[int]  # exactly the excerpts pooled
    missing_tokens: int | None  # positions the simulator left unanswered (not pooled)


@dataclass(frozen=True)
class ScoreChain:
    """The scores of one explanation sample by one simulator, and everything behind them."""

    explainer: str
    explainer_hash: str
    sample: int
    simulator: str
    simulator_hash: str
    dagster_run_id: str | None  # as recorded on the score rows
    code_version: str | None
    scores: list[Score]
    explanation: Explanation | None  # None when the explanations table no longer has the row
    explainer_calls: list[LLMCall]
    shown_excerpts: list[ShownExcerpt]
    simulations: list[SimulatedExcerpt]
    simulator_calls: list[LLMCall]
    tables: list[TableRead]
    # An imported neuron's files: its record, then its explanations (its neuron_records row).
    imported_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Lineage:
    model_prefix: str
    layer: int
    neuron: int
    chains: list[ScoreChain]


@dataclass
class RevisionRound:
    round: int
    explainer: str
    previous_explanation: str | None
    revised_explanation: str | None
    kept: bool
    previous_score: float | None  # calibration
    candidate_score: float | None  # calibration
    reported_score: float | None  # test, of the explanation carried forward
    error: str | None
    counterexamples: list[dict[str, Any]]  # source, expected, text, miss, error
