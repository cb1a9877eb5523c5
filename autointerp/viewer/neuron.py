"""The neuron page as data: every explanation with its scores and lineage, the neuron's excerpts
as token heatmaps (true activations, and the simulated ones where an excerpt was scored), its
moments and quantile boundaries, and its revision rounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from autointerp.activations.data_model import QUANTILES, is_dead
from autointerp.lineage.chain import LLMCall, RevisionRound, TableRead
from autointerp.lineage.read import CALL_COLUMNS, EXPLAINER_CALLS, llm_calls, table_reads
from autointerp.score.selection import best_samples, selection_split
from autointerp.score.summary import REPORTED_SPLIT as REPORTED
from autointerp.viewer.errors import NotFoundError
from autointerp.viewer.revisions import neuron_rounds
from autointerp.viewer.tables import ModelTables

SPLITS = ("calibration", "valid", "test")
SETS = ("top", "random", "top_and_random")
MOMENTS = ("mean", "variance", "skewness", "kurtosis", "max_activation")
RECORD_COLUMNS = [
    *MOMENTS,
    "corpus_id",  # null in tables written before corpora had an identity
    "quantile_boundaries",
    "top_excerpt_ids",
    "top_activations",
    "random_excerpt_ids",
    "random_activations",
    "quantile_excerpt_ids",
    "quantile_activations",
]
SCORE_COLUMNS = [
    "neuron",
    "explainer",
    "explainer_hash",
    "simulator",
    "simulator_hash",
    "sample",
    "split",
    "scored_on",
    "ev_correlation",
    "rsquared",
    "absolute_dev_explained",
    "excerpt_ids",
    "calibrated",
    "undefined_reason",
    "dagster_run_id",
    "code_version",
    *(
        f"{table}_version"
        for table in ("neuron_records", "top_k_excerpts", "explanations", "simulations")
    ),
]
EXPLANATION_COLUMNS = [
    "neuron",
    "explainer",
    "explainer_hash",
    "sample",
    "explanation",
    "prompt_hash",
    "call_ids",
    "error",
]
# Columns a simulations table written before they existed lacks: its files read them as nulls.
NEWER_SIMULATION_COLUMNS = {
    "method": pl.Utf8,  # the simulator method actually used
    "missing_positions": pl.List(pl.Int32),  # target tokens the simulator did not answer
    "truncated": pl.Boolean,
}
SIMULATION_COLUMNS = [
    "explainer",
    "explainer_hash",
    "sample",
    "simulator",
    "simulator_hash",
    "excerpt_id",
    "split",
    "kind",
    "expected_activations",
    "error",
    *NEWER_SIMULATION_COLUMNS,
]
CHAIN = ("explainer", "explainer_hash", "sample", "simulator", "simulator_hash")
PAIR = ("explainer", "explainer_hash", "simulator", "simulator_hash")


@dataclass(frozen=True)
class Excerpt:
    """One excerpt of the neuron: its tokens with the true activations, and the simulated ones
    (0–10) where the focused explanation was scored on it."""

    excerpt_id: int
    label: str
    split: str | None  # train (shown to the explainer), calibration, valid, test; None: unsplit
    tokens: list[str]
    activations: list[float]
    simulated: list[float] | None
    missing: list[int]  # positions the simulator gave no value for

    @property
    def max_activation(self) -> float:
        return max(self.activations, default=0.0)


@dataclass(frozen=True)
class ScoreCell:
    ev_correlation: float | None
    rsquared: float | None  # only where predictions were calibrated to the activation scale
    absolute_dev_explained: float | None
    calibrated: bool
    reason: str | None  # why ev_correlation is undefined
    excerpts: int


@dataclass(frozen=True)
class SimulationNote:
    """How the simulator fared on the sample's scored excerpts."""

    excerpts: int
    errors: int
    methods: list[str]  # the simulator methods actually used (newer tables)
    missing_positions: int  # target tokens the simulator did not answer (newer tables)
    truncated: int  # excerpts whose simulation was cut short (newer tables)


@dataclass(frozen=True)
class ScoredSample:
    explainer: str
    explainer_hash: str
    simulator: str
    simulator_hash: str
    sample: int
    explanation: str | None
    error: str | None
    chosen: bool
    scores: dict[tuple[str, str], ScoreCell]  # (split, set)
    simulation: SimulationNote
    focused: bool
    dagster_run_id: str | None
    code_version: str | None
    tables: list[TableRead]
    calls: list[LLMCall]  # the explainer's LLM calls: the prompt as sent and the completion


@dataclass(frozen=True)
class ExplanationGroup:
    """One explainer and simulator pair: its samples, and which one counts and why."""

    explainer: str
    simulator: str
    why: str
    samples: list[ScoredSample]


@dataclass(frozen=True)
class Band:
    label: str
    low: float | None
    high: float | None
    excerpts: list[Excerpt]


@dataclass(frozen=True)
class NeuronPage:
    layer: int
    neuron: int
    neurons: int  # in the layer
    layers: list[int]  # layers with records
    dead: bool
    moments: dict[str, float | None]
    boundaries: list[tuple[float, float | None]]
    groups: list[ExplanationGroup]
    focus: tuple[str, str] | None  # explainer, simulator drawn on the excerpts
    top: list[Excerpt]
    random: list[Excerpt]
    bands: list[Band]
    revisions: list[RevisionRound]  # counterexamples with tokens and both activations

    @property
    def scale(self) -> float:
        return self.moments.get("max_activation") or 0.0


def neuron_page(
    tables: ModelTables, layer: int, neuron: int, focus: tuple[str, str] | None = None
) -> NeuronPage:
    """Everything the page shows of one neuron. `focus` (explainer, simulator) picks whose
    simulation is drawn on the excerpts; by default, the pair whose chosen sample scored best on
    the test split."""
    layers = tables.snapshot("neuron_records").partitions
    present = tables.frame("neuron_records", ["neuron", "max_activation"], layer=layer)
    this = present.filter(pl.col("neuron") == neuron)
    if not this.height:
        raise NotFoundError(
            f"neuron {neuron} is not in layer {layer}: it has neurons 0-{present.height - 1}"
        )
    record = tables.rows("neuron_records", RECORD_COLUMNS, layer, neuron).row(0, named=True)
    scores = tables.frame("scores", ["layer", *SCORE_COLUMNS], layer=layer)
    scores = scores.filter(pl.col("neuron") == neuron)
    explanations = tables.frame("explanations", EXPLANATION_COLUMNS, layer=layer)
    explanations = explanations.filter(pl.col("neuron") == neuron)
    simulations = (
        tables.rows("simulations", SIMULATION_COLUMNS, layer, neuron)
        if tables.exists("simulations")
        else pl.DataFrame(schema={c: pl.Null for c in ["neuron", *SIMULATION_COLUMNS]})
    ).cast(NEWER_SIMULATION_COLUMNS)
    groups = _groups(tables, scores, explanations, simulations, layer, focus)
    focused = next((s for g in groups for s in g.samples if s.focused), None)
    simulated = {}
    if focused is not None:
        mine = simulations.filter(
            *[pl.col(key) == getattr(focused, key) for key in CHAIN], pl.col("error").is_null()
        )
        simulated = {
            (row["kind"], row["excerpt_id"]): (
                row["expected_activations"],
                row["missing_positions"] or [],
            )
            for row in mine.iter_rows(named=True)
        }
    splits = _splits(tables, layer, neuron)
    ids = [
        *record["top_excerpt_ids"],
        *record["random_excerpt_ids"],
        *(i for band in record["quantile_excerpt_ids"] or [] for i in band),
    ]
    tokens = _tokens(tables, ids, record["corpus_id"], layer)

    def excerpts(
        ids: Sequence[int], acts: Sequence[list[float]], label: str, kind: str | None
    ) -> list[Excerpt]:
        """An excerpt can be both a top and a random record (in tables written before random
        records were drawn outside a neuron's top-k): its split and simulation are those of its
        `kind`; a quantile-band sample (kind None) shows those of either."""
        found = []
        for rank, (i, a) in enumerate(zip(ids, acts, strict=True)):
            key = (kind, i)
            if kind is None:
                key = next(((k, i) for k in ("top", "random") if (k, i) in splits), key)
            expected, missing = simulated.get(key, (None, []))
            found.append(
                Excerpt(
                    excerpt_id=i,
                    label=f"{label}#{rank + 1}",
                    split=splits.get(key),
                    tokens=tokens.get(i, []),
                    activations=a,
                    simulated=expected,
                    missing=missing,
                )
            )
        return found

    bounds = list(record["quantile_boundaries"] or [])
    bands = [
        Band(
            label=f"{QUANTILES[b]:g}–{QUANTILES[b + 1]:g}",
            low=bounds[b] if b < len(bounds) else None,
            high=bounds[b + 1] if b + 1 < len(bounds) else None,
            excerpts=excerpts(band_ids, band_acts, "", None),
        )
        for b, (band_ids, band_acts) in enumerate(
            zip(
                record["quantile_excerpt_ids"] or [],
                record["quantile_activations"] or [],
                strict=True,
            )
        )
    ]
    return NeuronPage(
        layer=layer,
        neuron=neuron,
        neurons=present.height,
        layers=layers,
        dead=bool(this.select(is_dead(pl.col("max_activation"))).item()),
        moments={name: _number(record[name]) for name in MOMENTS},
        boundaries=[
            (q, _number(bounds[i]) if i < len(bounds) else None) for i, q in enumerate(QUANTILES)
        ],
        groups=groups,
        focus=(focused.explainer, focused.simulator) if focused else None,
        top=excerpts(record["top_excerpt_ids"], record["top_activations"], "top ", "top"),
        random=excerpts(
            record["random_excerpt_ids"], record["random_activations"], "random ", "random"
        ),
        bands=bands,
        revisions=neuron_rounds(tables, layer, neuron),
    )


def _groups(
    tables: ModelTables,
    scores: pl.DataFrame,
    explanations: pl.DataFrame,
    simulations: pl.DataFrame,
    layer: int,
    focus: tuple[str, str] | None,
) -> list[ExplanationGroup]:
    best = best_samples(scores)
    chosen = {
        tuple(row[k] for k in (*PAIR, "sample")): row["selection_score"]
        for row in best.iter_rows(named=True)
    }
    if focus is None and best.height:  # the best explanation's simulation is drawn by default
        top = best.sort("score", "explainer", descending=[True, False], nulls_last=True).row(
            0, named=True
        )
        focus = (top["explainer"], top["simulator"])
    calls = _explainer_calls(tables, layer, explanations)
    groups = []
    pairs = scores.select(PAIR).unique().sort(PAIR).rows(named=True)
    for pair in pairs:
        rows = scores.filter(*[pl.col(k) == v for k, v in pair.items()])
        samples = []
        for (sample,), sample_rows in sorted(rows.group_by("sample"), key=lambda g: g[0]):
            key = (*pair.values(), sample)
            explanation = explanations.filter(
                pl.col("explainer") == pair["explainer"],
                pl.col("explainer_hash") == pair["explainer_hash"],
                pl.col("sample") == sample,
            )
            found = explanation.row(0, named=True) if explanation.height else {}
            first = sample_rows.row(0, named=True)
            samples.append(
                ScoredSample(
                    **pair,
                    sample=sample,
                    explanation=found.get("explanation"),
                    error=found.get("error"),
                    chosen=key in chosen,
                    scores=_score_cells(sample_rows),
                    simulation=_simulation_note(
                        simulations.filter(
                            *[pl.col(k) == v for k, v in pair.items()], pl.col("sample") == sample
                        )
                    ),
                    focused=key in chosen and (pair["explainer"], pair["simulator"]) == focus,
                    dagster_run_id=first["dagster_run_id"],
                    code_version=first["code_version"],
                    tables=table_reads(sample_rows, tables.history),
                    calls=[calls[i] for i in found.get("call_ids") or [] if i in calls],
                )
            )
        groups.append(
            ExplanationGroup(
                explainer=pair["explainer"],
                simulator=pair["simulator"],
                why=_why(samples, chosen),
                samples=samples,
            )
        )
    return groups


def _why(samples: list[ScoredSample], chosen: dict[tuple, float | None]) -> str:
    """Why the chosen sample counts (`score.selection`: the best on the selection split)."""
    pick = next(s for s in samples if s.chosen)
    if len(samples) == 1:
        return f"the only sample: its {REPORTED} score is reported"
    on = selection_split(REPORTED)
    score = chosen[
        (pick.explainer, pick.explainer_hash, pick.simulator, pick.simulator_hash, pick.sample)
    ]
    if score is None:
        return (
            f"no sample has a defined {on} score, so the first (sample {pick.sample}) counts; "
            f"its {REPORTED} score is reported"
        )
    return (
        f"sample {pick.sample} scored highest on the {on} split (top and random, {score:.3f}) "
        f"of {len(samples)} samples; its {REPORTED} score is reported, never the best of the "
        f"{REPORTED} scores"
    )


def _score_cells(rows: pl.DataFrame) -> dict[tuple[str, str], ScoreCell]:
    found = {}
    for row in rows.iter_rows(named=True):
        calibrated = bool(row["calibrated"])
        found[(row["split"], row["scored_on"])] = ScoreCell(
            ev_correlation=_number(row["ev_correlation"]),
            rsquared=_number(row["rsquared"]) if calibrated else None,
            absolute_dev_explained=_number(row["absolute_dev_explained"]) if calibrated else None,
            calibrated=calibrated,
            reason=row["undefined_reason"],
            excerpts=len(row["excerpt_ids"] or []),
        )
    return found


def _simulation_note(rows: pl.DataFrame) -> SimulationNote:
    methods = rows["method"].drop_nulls().unique().sort().to_list()
    missing = rows["missing_positions"].drop_nulls().list.len().sum() if rows.height else 0
    return SimulationNote(
        excerpts=rows.height,
        errors=rows["error"].is_not_null().sum(),
        methods=methods,
        missing_positions=int(missing or 0),
        truncated=int(rows["truncated"].fill_null(False).sum()),
    )


def _explainer_calls(
    tables: ModelTables, layer: int, explanations: pl.DataFrame
) -> dict[str, LLMCall]:
    ids = sorted({i for ids in explanations["call_ids"].to_list() for i in ids or []})
    if not ids or not tables.exists(EXPLAINER_CALLS):
        return {}
    frame = tables.matching(EXPLAINER_CALLS, CALL_COLUMNS, layer, pl.col("call_id").is_in(ids))
    return {call.call_id: call for call in llm_calls(frame)}


def _splits(tables: ModelTables, layer: int, neuron: int) -> dict[tuple[str, int], str]:
    """Each excerpt's split in the reference splits (top_k_excerpts), by kind and excerpt."""
    if not tables.exists("top_k_excerpts"):
        return {}
    columns = ["neuron", "kind", "excerpt_id", "split"]
    frame = tables.frame("top_k_excerpts", columns, layer=layer)
    mine = frame.filter(pl.col("neuron") == neuron)
    return {(kind, i): split for _, kind, i, split in mine.iter_rows()}


def _tokens(
    tables: ModelTables, ids: Sequence[int], corpus_id: str | None, layer: int
) -> dict[int, list[str]]:
    """The token strings of excerpts, from the corpus the records came from (every corpus's,
    for records that do not name one); held once per corpus version. An imported model's
    corpus is partitioned by layer, each layer's excerpts a corpus of their own."""
    columns = ["excerpt_id", "tokens"]
    if tables.snapshot("corpus").column == "layer":
        corpus = tables.frame("corpus", columns, layer=layer)
    else:
        corpus = tables.frame("corpus", columns, key=corpus_id)
    found = corpus.filter(pl.col("excerpt_id").is_in(list(set(ids))))
    return dict(found.iter_rows())


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
