"""The lineage of one neuron's scores: every input behind a score, read back from the Delta tables.

For each score of a neuron (one per explainer profile, sample and simulator profile), the chain
runs score rows -> simulation rows (true and expected activations per scored excerpt) -> the
explanation (text, prompt hash, call ids) -> the LLM calls (the request as sent and what came
back) -> the excerpts the explainer saw and those it was scored on (with their corpus text) ->
the Delta version of every table read and the commit, Dagster run and code version that wrote it.

Upstream tables are read at the version recorded on the score rows (a `<table>_version` column,
e.g. `simulations_version`), by time travel, so the chain shows the inputs as the score saw them
even after they were rewritten; a table whose version the score rows do not record is read at its
latest version and marked so. Only the layer's partition of each table and only the columns
needed are read (the corpus, unpartitioned, for its ids and texts), so one neuron's lineage costs
a few partition reads whatever the number of layers.

Which commit wrote a partition's rows: the newest data commit at or before the version read whose
replace predicate (`layer = 5 AND explainer = 'x'`, as `autointerp.delta` writes them) covers the
rows; a commit without a predicate replaced or appended the whole table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from autointerp import delta
from autointerp.errors import InputError
from autointerp.explanations import EXPLANATIONS_SCHEMA
from autointerp.llm.accounting import CALLS_SCHEMA
from autointerp.scores import KEYS, SCORES_SCHEMA, score
from autointerp.simulations import SIMULATIONS_SCHEMA
from autointerp.splits import SCHEMA as EXCERPTS_SCHEMA

PARTITION = "layer"
VERSION_SUFFIX = "_version"
EXPLAINER_CALLS, SIMULATOR_CALLS = "explainer_calls", "simulator_calls"
# Tables in the order of the chain, upstream last.
TABLES = (
    "scores",
    "simulations",
    "explanations",
    EXPLAINER_CALLS,
    SIMULATOR_CALLS,
    "top_k_excerpts",
    "neuron_records",
    "corpus",
)
_CHAIN = ("explainer", "explainer_hash", "sample", "simulator", "simulator_hash")
_SIMULATION_COLUMNS = [*_CHAIN, "excerpt_id", "split", "kind", "true_activations"]
_SIMULATION_COLUMNS += ["expected_activations", "call_ids", "error"]
_EXPLANATION_COLUMNS = ["explainer", "explainer_hash", "sample", "explanation", "prompt_hash"]
_EXPLANATION_COLUMNS += ["call_ids", "error"]
_CALL_COLUMNS = [c for c in CALLS_SCHEMA if c not in ("latency_s", "attempts")]
_EXCERPT_COLUMNS = ["split", "kind", "rank", "excerpt_id", "max_activation"]
# What each table's reads take, with their types, so a table never written reads as empty.
_SCHEMAS = {
    "simulations": SIMULATIONS_SCHEMA,
    "explanations": EXPLANATIONS_SCHEMA,
    "top_k_excerpts": EXCERPTS_SCHEMA,
    EXPLAINER_CALLS: CALLS_SCHEMA,
    SIMULATOR_CALLS: CALLS_SCHEMA,
}
# The commits that add rows: write_partitions makes WRITEs; a CREATE TABLE adds none.
_DATA_OPERATIONS = frozenset({"WRITE"})
# `column = literal` and `column IN (literal, ...)`, the clauses delta-rs records for a predicate.
_LITERAL = r"'(?:[^']|'')*'|-?[\w.]+"
_EQUALS = re.compile(rf'"?(\w+)"?\s*=\s*({_LITERAL})')
_IN = re.compile(r'"?(\w+)"?\s+IN\s*\(([^)]*)\)', re.IGNORECASE)


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
    calibrated: bool
    excerpt_ids: list[int]  # exactly the excerpts pooled


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


@dataclass(frozen=True)
class Lineage:
    model_prefix: str
    layer: int
    neuron: int
    chains: list[ScoreChain]


class _Tables:
    """Reads of one layer's partitions, each table version read once, and commit histories.

    Opening a table replays its log, so each is opened as few times as possible: its latest
    version comes from its history, which the chain needs anyway."""

    def __init__(self, delta_root: Path, model_prefix: str, layer: int) -> None:
        self.root = delta_root / model_prefix
        self.layer = layer
        self._frames: dict[tuple[str, int | None, tuple[str, ...] | None], pl.DataFrame] = {}
        self._histories: dict[str, list[dict[str, Any]]] = {}

    def uri(self, table: str) -> str:
        return str(self.root / table)

    def history(self, table: str) -> list[dict[str, Any]]:
        """The table's commits, newest first; none when it has never been written."""
        if table not in self._histories:
            try:
                self._histories[table] = delta.commit_history(self.uri(table))
            except delta.TableNotMaterializedError:
                self._histories[table] = []
        return self._histories[table]

    def latest(self, table: str) -> int | None:
        history = self.history(table)
        return history[0]["version"] if history else None

    def read(
        self,
        table: str,
        version: int | None,
        columns: Sequence[str] | None,
        *,
        partitioned: bool = True,
        where: pl.Expr | None = None,
    ) -> pl.DataFrame:
        """The layer's partition (or an unpartitioned table) at `version`: `columns` of it, or
        all of them when None; each read once. A table never written (version None) reads as
        no rows."""
        key = (table, version, None if columns is None else tuple(columns), str(where))
        if key not in self._frames:
            if version is None:
                schema = _SCHEMAS[table]
                self._frames[key] = pl.DataFrame(schema={c: schema[c] for c in columns or ()})
            else:
                self._frames[key] = delta.read_table(
                    self.uri(table),
                    partition_column=PARTITION if partitioned else None,
                    partitions=[self.layer] if partitioned else None,
                    version=version,
                    columns=columns,
                    where=where,
                )
        return self._frames[key]

    def writer(self, table: str, version: int, rows: Mapping[str, object]) -> Commit | None:
        """The newest data commit at or before `version` whose predicate covers `rows`."""
        for entry in self.history(table):  # newest first
            if entry["version"] > version or entry.get("operation") not in _DATA_OPERATIONS:
                continue
            predicate = (entry.get("operationParameters") or {}).get("predicate")
            if predicate is None or _covers(predicate, rows):
                return Commit(
                    version=entry["version"],
                    timestamp=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC).isoformat(
                        timespec="milliseconds"
                    ),
                    operation=entry["operation"],
                    dagster_run_id=entry.get("dagster_run_id"),
                    dagster_asset_key=entry.get("dagster_asset_key"),
                    code_version=entry.get("dagster_code_version"),
                )
        return None


def _covers(predicate: str, rows: Mapping[str, object]) -> bool:
    """Whether a replace predicate (a conjunction of per-column value lists) covers `rows`;
    columns that `rows` does not name constrain nothing we know of."""
    allowed: dict[str, set[str]] = {}
    for column, literal in _EQUALS.findall(predicate):
        allowed.setdefault(column, set()).add(_unquote(literal))
    for column, literals in _IN.findall(predicate):
        allowed.setdefault(column, set()).update(
            _unquote(literal) for literal in re.findall(_LITERAL, literals)
        )
    return all(str(rows[column]) in values for column, values in allowed.items() if column in rows)


def _unquote(literal: str) -> str:
    return literal[1:-1].replace("''", "'") if literal.startswith("'") else literal


def _score_rows(
    tables: _Tables, neuron: int, explainer: str | None, simulator: str | None = None
) -> pl.DataFrame:
    """The neuron's score rows (all columns), or InputError saying what does exist."""
    version = tables.latest("scores")
    if version is None:
        raise InputError(f"{tables.uri('scores')} has not been materialized yet")
    # Every column: the lineage columns (versions, run id, code version) are optional.
    layer_rows = tables.read("scores", version, None)
    rows = layer_rows.filter(pl.col("neuron") == neuron)
    asked = f"neuron {neuron} of layer {tables.layer}"
    if rows.is_empty():
        found = f"{layer_rows['neuron'].n_unique()} neurons" if layer_rows.height else "none"
        raise InputError(f"no score for {asked} in {tables.uri('scores')} (layer has {found})")
    for column, name in (("explainer", explainer), ("simulator", simulator)):
        if name is None:
            continue
        chosen = rows.filter(pl.col(column) == name)
        if chosen.is_empty():
            present = ", ".join(sorted(rows[column].unique().to_list()))
            raise InputError(f"no score of {column} {name!r} for {asked}; it has: {present}")
        rows = chosen
    return rows


def score_lineage(
    delta_root: Path, model_prefix: str, layer: int, neuron: int, explainer: str | None = None
) -> Lineage:
    """The lineage of every score of one neuron, or of one explainer profile's scores."""
    tables = _Tables(delta_root, model_prefix, layer)
    rows = _score_rows(tables, neuron, explainer)
    chains = [
        _chain(tables, neuron, chain_rows)
        for _, chain_rows in rows.sort(*_CHAIN, "split", "scored_on").group_by(
            _CHAIN, maintain_order=True
        )
    ]
    return Lineage(model_prefix=model_prefix, layer=layer, neuron=neuron, chains=chains)


def _recorded(rows: pl.DataFrame, table: str) -> int | None:
    column = table + VERSION_SUFFIX
    if column not in rows.columns:
        return None
    value = rows[column].drop_nulls()
    return int(value[0]) if len(value) else None


def _first(rows: pl.DataFrame, column: str) -> str | None:
    return rows[column][0] if column in rows.columns else None


def _chain(tables: _Tables, neuron: int, rows: pl.DataFrame) -> ScoreChain:
    key = rows.row(0, named=True)
    identity = {
        "scores": {"explainer": key["explainer"], "simulator": key["simulator"]},
        "simulations": {"explainer": key["explainer"], "simulator": key["simulator"]},
        "explanations": {"explainer": key["explainer"]},
        EXPLAINER_CALLS: {"profile": key["explainer"]},
        SIMULATOR_CALLS: {"profile": key["simulator"]},
    }
    versions: dict[str, int | None] = {}
    reads = []
    for table in TABLES:
        recorded = None if table == "scores" else _recorded(rows, table)
        version = recorded if recorded is not None else tables.latest(table)
        versions[table] = version
        rows_of = {PARTITION: tables.layer, **identity.get(table, {})}
        writer = None if version is None else tables.writer(table, version, rows_of)
        reads.append(TableRead(table, version, recorded is not None, writer))

    def matching(table: str, columns: Sequence[str], on: Sequence[str]) -> pl.DataFrame:
        frame = tables.read(
            table, versions[table], ["neuron", *columns], where=pl.col("neuron") == neuron
        )
        return frame.filter(
            pl.col("neuron") == neuron, *[pl.col(column) == key[column] for column in on]
        )

    simulations = matching("simulations", _SIMULATION_COLUMNS, _CHAIN).sort(
        "split", "kind", "excerpt_id"
    )
    explanation_rows = matching(
        "explanations", _EXPLANATION_COLUMNS, ("explainer", "explainer_hash", "sample")
    )
    shown = (
        matching("top_k_excerpts", _EXCERPT_COLUMNS, ())
        .filter((pl.col("split") == "train") & (pl.col("kind") == "top"))
        .sort("rank")
    )
    explanation = None
    if explanation_rows.height:
        found = explanation_rows.row(0, named=True)
        explanation = Explanation(
            text=found["explanation"],
            prompt_hash=found["prompt_hash"],
            call_ids=found["call_ids"] or [],
            error=found["error"],
        )
    excerpt_ids = {*simulations["excerpt_id"].to_list(), *shown["excerpt_id"].to_list()}
    texts = _texts(tables, versions["corpus"], excerpt_ids)
    simulation_call_ids = sorted({i for ids in simulations["call_ids"].to_list() for i in ids})
    return ScoreChain(
        explainer=key["explainer"],
        explainer_hash=key["explainer_hash"],
        sample=key["sample"],
        simulator=key["simulator"],
        simulator_hash=key["simulator_hash"],
        dagster_run_id=_first(rows, "dagster_run_id"),
        code_version=_first(rows, "code_version"),
        scores=[
            Score(
                split=row["split"],
                scored_on=row["scored_on"],
                ev_correlation=row["ev_correlation"],
                rsquared=row["rsquared"],
                absolute_dev_explained=row["absolute_dev_explained"],
                calibrated=row["calibrated"],
                excerpt_ids=row["excerpt_ids"],
            )
            for row in rows.iter_rows(named=True)
        ],
        explanation=explanation,
        explainer_calls=_calls(
            tables, EXPLAINER_CALLS, versions, explanation.call_ids if explanation else []
        ),
        shown_excerpts=[
            ShownExcerpt(
                excerpt_id=row["excerpt_id"],
                rank=row["rank"],
                max_activation=row["max_activation"],
                text=texts.get(row["excerpt_id"]),
            )
            for row in shown.iter_rows(named=True)
        ],
        simulations=[
            SimulatedExcerpt(
                excerpt_id=row["excerpt_id"],
                split=row["split"],
                kind=row["kind"],
                text=texts.get(row["excerpt_id"]),
                true_activations=row["true_activations"],
                expected_activations=row["expected_activations"],
                call_ids=row["call_ids"] or [],
                error=row["error"],
            )
            for row in simulations.iter_rows(named=True)
        ],
        simulator_calls=_calls(tables, SIMULATOR_CALLS, versions, simulation_call_ids),
        tables=reads,
    )


def _texts(tables: _Tables, version: int | None, excerpt_ids: set[int]) -> dict[int, str]:
    """Each excerpt's text; the corpus is one unpartitioned table, read once per version."""
    if version is None or not excerpt_ids:
        return {}
    corpus = tables.read("corpus", version, ["excerpt_id", "text"], partitioned=False)
    found = corpus.filter(pl.col("excerpt_id").is_in(list(excerpt_ids)))
    return dict(found.iter_rows())


def _calls(
    tables: _Tables, table: str, versions: Mapping[str, int | None], call_ids: Sequence[str]
) -> list[LLMCall]:
    if not call_ids:
        return []
    wanted = pl.col("call_id").is_in(list(call_ids))
    frame = tables.read(table, versions[table], _CALL_COLUMNS, where=wanted)
    calls = []
    for row in frame.drop(PARTITION).unique("call_id").sort("call_id").iter_rows(named=True):
        request = json.loads(row.pop("request_json"))
        calls.append(
            LLMCall(
                **{**row, "response_texts": row["response_texts"] or []},
                prompt=_prompt(request),
                params=request.get("params", {}),
            )
        )
    return calls


def _prompt(request: Mapping[str, Any]) -> str:
    """The prompt of a recorded request: chat messages as `[role] content`, or the completion
    prompt itself."""
    if request.get("messages") is not None:
        return "\n".join(
            f"[{message.get('role')}] {message.get('content')}" for message in request["messages"]
        )
    return str(request.get("prompt"))


def reproduce_score(
    delta_root: Path, model_prefix: str, layer: int, neuron: int, explainer: str, simulator: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(stored, recomputed): the neuron's score rows of one explainer and simulator as stored,
    and as `scores.score` computes them again from the simulations table read at the version
    recorded on the rows (`simulations_version`; the latest when not recorded). Both have the
    SCORES_SCHEMA columns in the same order, so equal frames mean the score is reproduced."""
    tables = _Tables(delta_root, model_prefix, layer)
    stored = _score_rows(tables, neuron, explainer, simulator)
    recomputed = []
    for _, rows in stored.group_by("explainer_hash", "simulator_hash", maintain_order=True):
        recorded = _recorded(rows, "simulations")
        version = recorded if recorded is not None else tables.latest("simulations")
        if version is None:
            raise InputError(f"{tables.uri('simulations')} has not been materialized yet")
        simulations = tables.read(
            "simulations",
            version,
            [PARTITION, "neuron", *_SIMULATION_COLUMNS],
            where=pl.col("neuron") == neuron,
        )
        chosen = simulations.join(rows.select(KEYS).unique(), on=KEYS, how="semi")
        recomputed.append(score(chosen, calibrate=bool(rows["calibrated"].any())))
    order = [*KEYS, "split", "scored_on"]
    return (
        stored.select(*SCORES_SCHEMA).sort(order),
        pl.concat(recomputed).sort(order),
    )


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
    return "\n".join(lines)


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
        lines.append(
            f"      {s.split:<11} {s.scored_on:<14} ev_correlation {_fmt(s.ev_correlation)}  "
            f"rsquared {_fmt(s.rsquared)}  abs_dev_explained {_fmt(s.absolute_dev_explained)}"
            f"{'  calibrated' if s.calibrated else ''}  ({len(s.excerpt_ids)} excerpts)"
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


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


# --- Revision rounds --------------------------------------------------------------------------


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


def revision_history(
    delta_root: Path, model_prefix: str, layer: int, neuron: int
) -> list[RevisionRound]:
    """The neuron's revision rounds (revised_explanations_rK), each with the counterexamples
    behind it (counterexamples_rK); empty when no round was materialized."""
    rounds = []
    root = Path(delta_root) / model_prefix
    k = 1
    while delta.table_version(str(root / f"revised_explanations_r{k}")) is not None:
        where = pl.col("neuron") == neuron
        revised = delta.read_table(
            str(root / f"revised_explanations_r{k}"),
            partition_column=PARTITION,
            partitions=[layer],
            where=where,
        )
        counter = delta.read_table(
            str(root / f"counterexamples_r{k}"),
            partition_column=PARTITION,
            partitions=[layer],
            columns=["neuron", "explainer", "source", "expected", "text", "miss", "error"],
            where=where,
        )
        for row in revised.iter_rows(named=True):
            shown = counter.filter(pl.col("explainer") == row["explainer"]).sort(
                "miss", descending=True, nulls_last=True
            )
            rounds.append(
                RevisionRound(
                    round=k,
                    explainer=row["explainer"],
                    previous_explanation=row["previous_explanation"],
                    revised_explanation=row["revised_explanation"],
                    kept=bool(row["kept"]),
                    previous_score=row["previous_score"],
                    candidate_score=row["candidate_score"],
                    reported_score=row["reported_score"],
                    error=row["error"],
                    counterexamples=shown.drop("neuron", "explainer", PARTITION).to_dicts(),
                )
            )
        k += 1
    return rounds


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
            lines.append(f"    {c['source']:9} {c['expected']:15} miss {_fmt(c['miss'])}  {text}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def revisions_json(rounds: Sequence[RevisionRound]) -> list[dict[str, Any]]:
    """Plain JSON of the rounds, NaN as null."""
    return [_json_safe(asdict(r)) for r in rounds]
