"""The published format in the core: what an export writes is what the publication's own reader
builds its dataclasses from, export then import reproduces the records and the stored scores
exactly, and a bad file fails with an error naming it."""

from __future__ import annotations

import functools
import http.server
import json
import math
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from autointerp.activations.splits import split_records
from autointerp.config.profiles import imported_profiles
from autointerp.errors import InputError
from autointerp.interchange.exporting import export_openai, read_layer
from autointerp.interchange.imported import (
    imported_explanations,
    imported_scores,
    imported_simulations,
)
from autointerp.interchange.importing import LayerCorpusId, import_layers
from autointerp.interchange.layout import Dataset
from autointerp.storage.delta import write_partitions
from tests.interchange.conftest import LAYERS, NEURONS, SPEC, layer_tables

# The publication's dataclasses and their fields (REFERENCE.md). Its reader builds each object
# as `cls(**fields)` of the class its dataclass_name names: a field more breaks it.
FIELDS = {
    "ActivationRecord": ("tokens", "activations"),
    "NeuronId": ("layer_index", "neuron_index"),
    "NeuronRecord": (
        "neuron_id",
        "random_sample",
        "random_sample_by_quantile",
        "quantile_boundaries",
        "mean",
        "variance",
        "skewness",
        "kurtosis",
        "most_positive_activation_records",
    ),
    "NeuronSimulationResults": ("neuron_id", "scored_explanations"),
    "ScoredExplanation": ("explanation", "scored_simulation"),
    "ScoredSimulation": (
        "scored_sequence_simulations",
        "ev_correlation_score",
        "rsquared_score",
        "absolute_dev_explained_score",
    ),
    "ScoredSequenceSimulation": (
        "simulation",
        "true_activations",
        "ev_correlation_score",
        "rsquared_score",
        "absolute_dev_explained_score",
    ),
    "SequenceSimulation": (
        "tokens",
        "expected_activations",
        "activation_scale",
        "distribution_values",
        "distribution_probabilities",
        "uncalibrated_simulation",
    ),
}


def publication_loads(text: str) -> SimpleNamespace:
    """Read as the publication's reader does: every object becomes the dataclass its
    dataclass_name names, built from exactly that dataclass's fields."""

    def build(fields: dict) -> SimpleNamespace:
        name = fields.pop("dataclass_name")
        assert set(fields) == set(FIELDS[name]), (name, sorted(fields))
        return SimpleNamespace(dataclass_name=name, **fields)

    return json.loads(text, object_hook=build)


def test_the_publications_reader_reads_every_file_and_slices_the_same_splits(published, source):
    splits = split_records(source.records)
    tokens = dict(source.corpus.select("excerpt_id", "tokens").iter_rows())
    for layer in LAYERS:
        for neuron in range(NEURONS):
            record = publication_loads(
                (published / f"collated-activations/{layer}/{neuron}.json").read_text()
            )
            assert record.dataclass_name == "NeuronRecord"
            assert (record.neuron_id.layer_index, record.neuron_id.neuron_index) == (layer, neuron)
            mine = splits.filter((pl.col("layer") == layer) & (pl.col("neuron") == neuron))
            # The reference's interleaved slices of 2 per split, over the records as written.
            per_split = SPEC.random_k // 3
            for kind, records, names, stride in (
                ("top", record.most_positive_activation_records, ("train", "calibration"), 4),
                ("random", record.random_sample, ("calibration", "valid", "test"), 3),
            ):
                for index, split in enumerate(names):
                    sliced = records[index : per_split * stride : stride]
                    expected = mine.filter(
                        (pl.col("split") == split) & (pl.col("kind") == kind)
                    ).sort("rank")
                    assert [r.tokens for r in sliced] == [tokens[i] for i in expected["excerpt_id"]]
                    assert [r.activations for r in sliced] == expected["activations"].to_list()
            results = publication_loads(
                (published / f"explanations/{layer}/{neuron}.jsonl").read_text()
            )
            (explained,) = results.scored_explanations
            scored = explained.scored_simulation
            assert (
                explained.explanation
                == source.explanations.filter(
                    (pl.col("layer") == layer) & (pl.col("neuron") == neuron)
                )["explanation"].item()
            )
            stored = source.scores.filter(
                (pl.col("layer") == layer)
                & (pl.col("neuron") == neuron)
                & (pl.col("split") == "test")
                & (pl.col("scored_on") == "top_and_random")
            ).row(0, named=True)
            for key in ("ev_correlation", "rsquared", "absolute_dev_explained"):
                value = getattr(scored, f"{key}_score")
                assert value == stored[key] or (value is None and math.isnan(stored[key]))
            assert len(scored.scored_sequence_simulations) == 2 * per_split  # 1:1, test split


def test_export_then_import_reproduces_the_records_and_the_stored_scores(published, source):
    corpus, records, explained = import_layers(
        Dataset(str(published)), LAYERS, neurons=NEURONS, neuron_sample="all", spec=SPEC
    )
    kept = [c for c in source.records.columns if not c.endswith("excerpt_ids")]
    assert records.select(kept).equals(source.records.select(kept))
    assert records["record_file"][0].endswith("collated-activations/0/0.json")
    # Every excerpt comes back with the tokens it had, under an id naming its file's slot.
    theirs = dict(source.corpus.select("excerpt_id", "tokens").iter_rows())
    ours = dict(corpus.select("excerpt_id", "tokens").iter_rows())
    for column in ("top_excerpt_ids", "random_excerpt_ids", "reference_excerpt_ids"):
        for before, after in zip(source.records[column], records[column], strict=True):
            assert [theirs[i] for i in before] == [ours[i] for i in after]
    assert records["top_excerpt_ids"][9].to_list() == [(1 << 40 | 1 << 16) + i for i in range(8)]

    explainer, simulator = imported_profiles("again", str(published))
    explanations = imported_explanations(explainer, explained)
    assert explanations["explanation"].to_list() == source.explanations["explanation"].to_list()
    simulations = imported_simulations(simulator, explanations, explained)
    scores = imported_scores(simulations, explained)
    stored = source.scores.filter(
        (pl.col("split") == "test") & (pl.col("scored_on") == "top_and_random")
    )
    same = ["layer", "neuron", "sample", "split", "scored_on", "tokens", "missing_tokens"]
    same += ["ev_correlation", "rsquared", "absolute_dev_explained", "calibrated"]
    assert scores.select(same).equals(stored.select(same).sort("layer", "neuron", "sample"))
    # The scored excerpts are the neuron's own test records, top and random.
    test = split_records(records).filter(pl.col("split") == "test")
    assert simulations.join(test, on=["layer", "neuron", "excerpt_id", "kind"]).height == (
        simulations.height
    )


def _edit(path: Path, change) -> None:
    lines = path.read_text().splitlines()
    path.write_text(json.dumps(change(json.loads(lines[0]))))


def _rename(record: dict) -> dict:
    record["dataclass_name"] = "NeuronRecords"
    return record


def _unnamed(record: dict) -> dict:
    del record["most_positive_activation_records"][2]["dataclass_name"]
    return record


def _short(record: dict) -> dict:
    record["random_sample"][1]["activations"].pop()
    return record


def _elsewhere(record: dict) -> dict:
    record["neuron_id"]["neuron_index"] = 4
    return record


def _wrong_class(results: dict) -> dict:
    simulation = results["scored_explanations"][0]["scored_simulation"]
    simulation["scored_sequence_simulations"][0]["dataclass_name"] = "SequenceSimulation"
    return results


RECORD, EXPLANATION = "collated-activations/1/3.json", "explanations/1/3.jsonl"
BAD_INPUTS = {
    "malformed": (RECORD, lambda p: p.write_text('{"dataclass_name": "NeuronRecord", '), "JSON"),
    "wrong dataclass_name": (
        RECORD,
        lambda p: _edit(p, _rename),
        "has dataclass_name 'NeuronRecords', expected 'NeuronRecord'",
    ),
    "missing dataclass_name": (
        RECORD,
        lambda p: _edit(p, _unnamed),
        "most_positive_activation_records[2]: has no dataclass_name",
    ),
    "tokens and activations differ": (
        RECORD,
        lambda p: _edit(p, _short),
        "random_sample[1]: 16 tokens but 15 activations",
    ),
    "another neuron": (RECORD, lambda p: _edit(p, _elsewhere), "says layer 1 neuron 4"),
    "missing neuron": (RECORD, Path.unlink, "is missing: the dataset has no neuron 3 of layer 1"),
    "missing layer": (
        "collated-activations/1",
        shutil.rmtree,
        "is missing: the dataset has no layer 1",
    ),
    "nested dataclass": (
        EXPLANATION,
        lambda p: _edit(p, _wrong_class),
        "expected 'ScoredSequenceSimulation'",
    ),
    "two lines": (
        EXPLANATION,
        lambda p: p.write_text(p.read_text() * 2),
        "expected exactly one line, found 2",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_file_fails_with_an_error_naming_it(published, tmp_path, case):
    copy = tmp_path / "dataset"
    shutil.copytree(published, copy)
    where, damage, message = BAD_INPUTS[case]
    damage(copy / where)
    with pytest.raises(InputError) as error:
        import_layers(Dataset(str(copy)), LAYERS, neurons=NEURONS, neuron_sample="all", spec=SPEC)
    assert str(copy / where) in str(error.value) and message in str(error.value)


def test_a_neuron_without_explanations_file_has_no_explanation(published, tmp_path):
    copy = tmp_path / "dataset"
    shutil.copytree(published, copy)
    (copy / EXPLANATION).unlink()
    _, records, explained = import_layers(
        Dataset(str(copy)), [1], neurons=NEURONS, neuron_sample="first:4", spec=SPEC
    )
    assert records["neuron"].to_list() == [0, 1, 2, 3]
    assert records["explanation_file"].to_list()[:3] == [
        str(copy / f"explanations/1/{n}.jsonl") for n in range(3)
    ]
    assert records["explanation_file"][3] is None and explained["neuron"].to_list() == [0, 1, 2]


def test_an_export_is_whole_or_absent(source, tmp_path):
    def tables_of(layer: int):
        if layer == 1:
            raise InputError("layer 1 cannot be read")
        return layer_tables(source, layer)

    out = tmp_path / "exports" / "openai"
    with pytest.raises(InputError, match="layer 1 cannot be read"):
        export_openai(out, LAYERS, tables_of, {})
    assert list((tmp_path / "exports").iterdir()) == []  # no folder, no partial one beside it
    out.mkdir()
    (out / "kept.txt").write_text("mine")
    with pytest.raises(InputError, match="is not an empty folder"):
        export_openai(out, LAYERS, lambda layer: layer_tables(source, layer), {})
    assert [p.name for p in out.iterdir()] == ["kept.txt"]


@pytest.fixture
def served(published):
    """The published dataset behind an HTTP server on loopback."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(published.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_port}/{published.name}"
        server.shutdown()


def test_a_url_is_read_only_when_the_network_is_allowed(published, served):
    with pytest.raises(InputError, match="AUTOINTERP_ALLOW_HUB"):
        Dataset(served)
    options = {"neurons": NEURONS, "neuron_sample": "random:3:0", "spec": SPEC}
    remote = import_layers(Dataset(served, allow_network=True), [1], **options)
    local = import_layers(Dataset(str(published)), [1], **options)
    # Where each excerpt was read from, and so the corpus identity hashed from it, differ.
    files = ["record_file", "explanation_file", "source", "corpus_id"]
    for theirs, ours in zip(remote, local, strict=True):
        assert theirs.drop(files, strict=False).equals(ours.drop(files, strict=False))
    assert remote[1]["record_file"][0].startswith(served)
    with pytest.raises(InputError, match="dataset has no neuron 8 of layer 1"):
        import_layers(
            Dataset(served, allow_network=True),
            [1],
            **{**options, "neurons": 10, "neuron_sample": "all"},
        )


def test_an_export_reads_the_corpus_its_records_name(source, tmp_path):
    """Corpora live side by side in the corpus table with overlapping excerpt ids: the export
    takes the tokens of the one the layer's records were captured over."""
    mine = source.corpus.select(pl.lit("corpus-mine").alias("corpus_id"), pl.all())
    other = mine.with_columns(
        corpus_id=pl.lit("corpus-other"), tokens=pl.col("tokens").list.reverse()
    )
    records = source.records.with_columns(corpus_id=pl.lit("corpus-mine"))
    tables = {
        "corpus": (pl.concat([other, mine]), "corpus_id", ["corpus-mine", "corpus-other"]),
        "neuron_records": (records, "layer", list(LAYERS)),
        **{
            name: (getattr(source, name), "layer", list(LAYERS))
            for name in ("explanations", "simulations", "scores")
        },
    }
    for name, (frame, column, partitions) in tables.items():
        write_partitions(
            str(tmp_path / name),
            frame,
            partition_column=column,
            partitions=partitions,
            commit_metadata={},
        )
    versions = {name: 0 for name in tables}
    explainer, simulator = source.explanations["explainer"][0], source.scores["simulator"][0]

    def from_delta(layer: int):
        return read_layer(str(tmp_path), layer, explainer, simulator, versions)

    export_openai(tmp_path / "from-delta", LAYERS, from_delta, {})
    export_openai(tmp_path / "from-memory", LAYERS, lambda layer: layer_tables(source, layer), {})
    files = sorted((tmp_path / "from-memory").glob("*/*/*.json*"))
    assert len(files) == 2 * len(LAYERS) * NEURONS
    for file in files:
        path = file.relative_to(tmp_path / "from-memory")
        assert (tmp_path / "from-delta" / path).read_bytes() == file.read_bytes()


def test_a_layer_corpus_id_is_its_content_however_read():
    corpus = pl.DataFrame(
        {
            "excerpt_id": [1, 2, 3],
            "tokens": [["a", "bc"], ["ab", "c"], ["d"]],
            "source": ["f/0.json", "f/0.json", "f/1.json"],
            "license": ["x", "x", "x"],
        }
    )

    def identity(*chunks: pl.DataFrame) -> str:
        hasher = LayerCorpusId()
        for chunk in chunks:
            hasher.update(chunk)
        return hasher.hexdigest()

    whole = identity(corpus)
    assert identity(corpus.head(1), corpus.tail(2)) == whole
    # Tokens that concatenate alike are still other tokens.
    swapped = corpus.with_columns(tokens=pl.Series([["ab", "c"], ["a", "bc"], ["d"]]))
    assert identity(swapped) != whole
    assert identity(corpus.with_columns(source=pl.lit("g/0.json"))) != whole
