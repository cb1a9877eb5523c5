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

Which commit wrote a partition's rows: the newest data commit at or before the version read that
replaced them, as every write of the project records in its commit metadata (the layers and
profiles it replaced); a commit that recorded nothing is taken to have written everything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from autointerp.errors import InputError
from autointerp.lineage.chain import (
    Commit,
    Explanation,
    Lineage,
    LLMCall,
    RevisionRound,
    Score,
    ScoreChain,
    ShownExcerpt,
    SimulatedExcerpt,
    TableRead,
)
from autointerp.score.scores import score
from autointerp.storage import delta
from autointerp.storage.schemas import (
    CALLS_SCHEMA,
    EXCERPTS_SCHEMA,
    EXPLANATIONS_SCHEMA,
    SCORE_KEYS,
    SCORES_SCHEMA,
    SIMULATIONS_SCHEMA,
)

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
CALL_COLUMNS = [c for c in CALLS_SCHEMA if c not in ("latency_s", "attempts")]
_EXCERPT_COLUMNS = ["split", "kind", "rank", "excerpt_id", "max_activation"]
IMPORTED_FILES = ("record_file", "explanation_file")  # imported neuron_records only
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


class _Tables:
    """Reads of one layer's partitions, each table version read once, and commit histories.

    Opening a table replays its log, so each is opened as few times as possible: its latest
    version comes from its history, which the chain needs anyway."""

    def __init__(
        self, model_root: str, layer: int, storage_options: Mapping[str, str] | None
    ) -> None:
        self.root = model_root.rstrip("/")
        self.layer = layer
        self.options = storage_options
        self._frames: dict[tuple[str, int | None, tuple[str, ...] | None], pl.DataFrame] = {}
        self._histories: dict[str, list[dict[str, Any]]] = {}

    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def history(self, table: str) -> list[dict[str, Any]]:
        """The table's commits, newest first; none when it has never been written."""
        if table not in self._histories:
            try:
                self._histories[table] = delta.commit_history(
                    self.uri(table), storage_options=self.options
                )
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
                    storage_options=self.options,
                )
        return self._frames[key]


def writer_commit(
    history: Sequence[Mapping[str, Any]], version: int, rows: Mapping[str, object]
) -> Commit | None:
    """Of a table's commits (newest first), the newest data commit at or before `version` that
    replaced `rows`, by what the project's own writes record in their commit metadata
    (`delta.replaced_rows`)."""
    for entry in history:
        if entry["version"] > version or entry.get("operation") not in _DATA_OPERATIONS:
            continue
        replaced = delta.replaced_rows(entry)
        if replaced is None or all(
            str(rows[column]) in values for column, values in replaced.items() if column in rows
        ):
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
    model_root: str,
    layer: int,
    neuron: int,
    explainer: str | None = None,
    *,
    storage_options: Mapping[str, str] | None = None,
) -> Lineage:
    """The lineage of every score of one neuron, or of one explainer profile's scores, from the
    tables of one model under `model_root` (a folder or an object-store URI)."""
    tables = _Tables(model_root, layer, storage_options)
    rows = _score_rows(tables, neuron, explainer)
    chains = [
        _chain(tables, neuron, chain_rows)
        for _, chain_rows in rows.sort(*_CHAIN, "split", "scored_on").group_by(
            _CHAIN, maintain_order=True
        )
    ]
    model_prefix = model_root.rstrip("/").rsplit("/", 1)[-1]
    return Lineage(model_prefix=model_prefix, layer=layer, neuron=neuron, chains=chains)


def _recorded(rows: pl.DataFrame, table: str) -> int | None:
    column = table + VERSION_SUFFIX
    if column not in rows.columns:
        return None
    value = rows[column].drop_nulls()
    return int(value[0]) if len(value) else None


def _first(rows: pl.DataFrame, column: str) -> str | None:
    return rows[column][0] if column in rows.columns else None


def table_reads(
    rows: pl.DataFrame, history: Callable[[str], Sequence[Mapping[str, Any]]]
) -> list[TableRead]:
    """Every table of the chain behind one explanation sample's score rows (`rows`, of one
    layer): the version the rows recorded (else the latest, from `history(table)`, newest
    first) and the commit that wrote the rows read there."""
    key = rows.row(0, named=True)
    identity = {
        "scores": {"explainer": key["explainer"], "simulator": key["simulator"]},
        "simulations": {"explainer": key["explainer"], "simulator": key["simulator"]},
        "explanations": {"explainer": key["explainer"]},
        EXPLAINER_CALLS: {"profile": key["explainer"]},
        SIMULATOR_CALLS: {"profile": key["simulator"]},
    }
    reads = []
    for table in TABLES:
        commits = history(table)
        recorded = None if table == "scores" else _recorded(rows, table)
        version = recorded if recorded is not None else (commits[0]["version"] if commits else None)
        rows_of = {PARTITION: key[PARTITION], **identity.get(table, {})}
        writer = None if version is None else writer_commit(commits, version, rows_of)
        reads.append(TableRead(table, version, recorded is not None, writer))
    return reads


def _chain(tables: _Tables, neuron: int, rows: pl.DataFrame) -> ScoreChain:
    key = rows.row(0, named=True)
    reads = table_reads(rows, tables.history)
    versions = {read.table: read.version for read in reads}

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
    imported_files = _imported_files(tables, versions["neuron_records"], neuron)
    texts = _texts(tables, versions["corpus"], excerpt_ids, _first(rows, "corpus_id"))
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
                missing_tokens=row.get("missing_tokens"),
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
        imported_files=imported_files,
    )


def _imported_files(tables: _Tables, version: int | None, neuron: int) -> list[str]:
    """The files an imported neuron was read from (its neuron_records row names them); none for
    a captured neuron."""
    if version is None:
        return []
    columns = tables.read("neuron_records", version, None, where=pl.lit(False)).columns
    if IMPORTED_FILES[0] not in columns:
        return []
    row = tables.read(
        "neuron_records", version, ["neuron", *IMPORTED_FILES], where=pl.col("neuron") == neuron
    ).filter(pl.col("neuron") == neuron)
    return [f for f in row.select(IMPORTED_FILES).row(0) if f] if row.height else []


def _texts(
    tables: _Tables, version: int | None, excerpt_ids: set[int], corpus_id: str | None
) -> dict[int, str]:
    """Each excerpt's text, from the corpus the score names (several live side by side in the
    corpus table, keyed by corpus_id; a score that names none reads the whole table)."""
    if version is None or not excerpt_ids:
        return {}
    where = pl.col("corpus_id") == corpus_id if corpus_id is not None else None
    corpus = tables.read("corpus", version, ["excerpt_id", "text"], partitioned=False, where=where)
    found = corpus.filter(pl.col("excerpt_id").is_in(list(excerpt_ids)))
    return dict(found.select("excerpt_id", "text").iter_rows())


def _calls(
    tables: _Tables, table: str, versions: Mapping[str, int | None], call_ids: Sequence[str]
) -> list[LLMCall]:
    if not call_ids:
        return []
    wanted = pl.col("call_id").is_in(list(call_ids))
    return llm_calls(tables.read(table, versions[table], CALL_COLUMNS, where=wanted))


def llm_calls(frame: pl.DataFrame) -> list[LLMCall]:
    """Audit rows of LLM calls (CALL_COLUMNS) as calls, each once, with the prompt as sent."""
    calls = []
    rows = frame.select(CALL_COLUMNS).unique("call_id").sort("call_id")
    for row in rows.iter_rows(named=True):
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
    model_root: str,
    layer: int,
    neuron: int,
    explainer: str,
    simulator: str,
    *,
    storage_options: Mapping[str, str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(stored, recomputed): the neuron's score rows of one explainer and simulator as stored,
    and as `scores.score` computes them again from the simulations table read at the version
    recorded on the rows (`simulations_version`; the latest when not recorded). Both have the
    SCORES_SCHEMA columns in the same order, so equal frames mean the score is reproduced."""
    tables = _Tables(model_root, layer, storage_options)
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
        chosen = simulations.join(rows.select(SCORE_KEYS).unique(), on=SCORE_KEYS, how="semi")
        recomputed.append(score(chosen, calibrate=bool(rows["calibrated"].any())))
    order = [*SCORE_KEYS, "split", "scored_on"]
    return (
        stored.select(*SCORES_SCHEMA).sort(order),
        pl.concat(recomputed).sort(order),
    )


# The counterexample columns a revision round shows: with the tokens and both activations, so
# each text can be drawn as the neuron and the simulator saw it.
COUNTEREXAMPLE_COLUMNS = [
    "neuron",
    "explainer",
    "source",
    "expected",
    "text",
    "tokens",
    "true_activations",
    "predicted",
    "miss",
    "error",
]


def revision_history(
    model_root: str,
    layer: int,
    neuron: int,
    explainer: str | None = None,
    *,
    storage_options: Mapping[str, str] | None = None,
) -> list[RevisionRound]:
    """The neuron's revision rounds (revised_explanations_rK), each with the counterexamples
    behind it (counterexamples_rK), of one explainer profile when `explainer` is given; empty
    when no round was materialized."""
    rounds = []
    root = model_root.rstrip("/")
    k = 1
    while delta.table_version(f"{root}/revised_explanations_r{k}", storage_options) is not None:
        where = pl.col("neuron") == neuron
        if explainer is not None:
            where &= pl.col("explainer") == explainer
        revised = delta.read_table(
            f"{root}/revised_explanations_r{k}",
            partition_column=PARTITION,
            partitions=[layer],
            where=where,
            storage_options=storage_options,
        )
        counter = delta.read_table(
            f"{root}/counterexamples_r{k}",
            partition_column=PARTITION,
            partitions=[layer],
            columns=COUNTEREXAMPLE_COLUMNS,
            where=where,
            storage_options=storage_options,
        )
        rounds += revision_round(k, revised, counter)
        k += 1
    return rounds


def revision_round(
    k: int, revised: pl.DataFrame, counterexamples: pl.DataFrame
) -> list[RevisionRound]:
    """Round `k` of one neuron: its revised_explanations_rK rows, each with its explainer's
    counterexamples_rK rows (largest miss first; the columns read, less neuron and explainer)."""
    rounds = []
    for row in revised.iter_rows(named=True):
        shown = counterexamples.filter(pl.col("explainer") == row["explainer"]).sort(
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
                counterexamples=shown.drop(
                    "neuron", "explainer", PARTITION, strict=False
                ).to_dicts(),
            )
        )
    return rounds
