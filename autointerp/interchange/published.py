"""The published format's objects (REFERENCE.md "Data model"), written and read as plain data.

Every object carries `dataclass_name` first, then exactly the fields of the publication's
dataclass, in its order: its own reader builds each dataclass from the fields it finds, so one
more field would break it. Undefined numbers are written `null` (what its serializer, orjson,
writes for NaN) and read back as NaN.

Reading checks every object's `dataclass_name` and required fields, that numbers are numbers and
that a record has one activation per token; any problem is an InputError naming the file and
where in it. Fields the publication's dataclasses give defaults may be absent.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from autointerp.errors import InputError
from autointerp.score.metrics import absolute_dev_explained, ev_correlation, rsquared

ACTIVATION_RECORD = "ActivationRecord"
NEURON_ID = "NeuronId"
NEURON_RECORD = "NeuronRecord"
NEURON_SIMULATION_RESULTS = "NeuronSimulationResults"
SCORED_EXPLANATION = "ScoredExplanation"
SCORED_SIMULATION = "ScoredSimulation"
SCORED_SEQUENCE_SIMULATION = "ScoredSequenceSimulation"
SEQUENCE_SIMULATION = "SequenceSimulation"
# ActivationScale: what `expected_activations` holds.
SIMULATED_SCALE = "simulated_normalized_activations"  # the simulator's 0-10
NEURON_SCALE = "neuron_activations"  # calibrated to the neuron's own scale

# Fields without a default in the publication's dataclasses.
REQUIRED = {
    ACTIVATION_RECORD: ("tokens", "activations"),
    NEURON_ID: ("layer_index", "neuron_index"),
    NEURON_RECORD: ("neuron_id",),
    NEURON_SIMULATION_RESULTS: ("neuron_id", "scored_explanations"),
    SCORED_EXPLANATION: ("explanation", "scored_simulation"),
    SCORED_SIMULATION: ("scored_sequence_simulations",),
    SCORED_SEQUENCE_SIMULATION: ("simulation", "true_activations", "ev_correlation_score"),
    SEQUENCE_SIMULATION: (
        "tokens",
        "expected_activations",
        "activation_scale",
        "distribution_values",
        "distribution_probabilities",
    ),
}


@contextmanager
def many_objects() -> Iterator[None]:
    """Pauses Python's cycle collector while a dataset's objects are read or written: millions
    of parsed lists and dicts, none in a cycle, that each collection would traverse again (it
    took a quarter to two fifths of an import's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- writing ---------------------------------------------------------------------------------


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def activation_record(tokens: Sequence[str], activations: np.ndarray) -> dict[str, Any]:
    """`activations` as float64, so that float32 values are written exactly."""
    return {
        "dataclass_name": ACTIVATION_RECORD,
        "tokens": list(tokens),
        "activations": np.asarray(activations, dtype=np.float64),
    }


def neuron_id(layer: int, neuron: int) -> dict[str, Any]:
    return {"dataclass_name": NEURON_ID, "layer_index": layer, "neuron_index": neuron}


def neuron_record(
    layer: int,
    neuron: int,
    *,
    top: list[dict],
    random: list[dict],
    by_quantile: list[list[dict]],
    quantile_boundaries: Sequence[float] | None,
    moments: Sequence[float | None],
) -> dict[str, Any]:
    """A NeuronRecord of ActivationRecord objects; `moments`: mean, variance, skewness,
    kurtosis."""
    mean, variance, skewness, kurtosis = (_number(m) for m in moments)
    return {
        "dataclass_name": NEURON_RECORD,
        "neuron_id": neuron_id(layer, neuron),
        "random_sample": random,
        "random_sample_by_quantile": by_quantile,
        "quantile_boundaries": (
            None if quantile_boundaries is None else [_number(b) for b in quantile_boundaries]
        ),
        "mean": mean,
        "variance": variance,
        "skewness": skewness,
        "kurtosis": kurtosis,
        "most_positive_activation_records": top,
    }


def scored_sequence_simulation(
    tokens: Sequence[str], true: np.ndarray, expected: np.ndarray
) -> dict[str, Any]:
    """One scored excerpt: the simulator's expected values (0-10; NaN, written null, where it
    gave none) and the sequence's own scores over the positions it answered."""
    expected = np.asarray(expected, dtype=np.float64)
    answered = ~np.isnan(expected)
    r, p = np.asarray(true, dtype=np.float64)[answered], expected[answered]
    return {
        "dataclass_name": SCORED_SEQUENCE_SIMULATION,
        "simulation": {
            "dataclass_name": SEQUENCE_SIMULATION,
            "tokens": list(tokens),
            "expected_activations": expected,
            "activation_scale": SIMULATED_SCALE,
            # The value distribution per token is not stored here: only its expectation.
            "distribution_values": [[] for _ in tokens],
            "distribution_probabilities": [[] for _ in tokens],
            "uncalibrated_simulation": None,
        },
        "true_activations": np.asarray(true, dtype=np.float64),
        "ev_correlation_score": _number(ev_correlation(r, p)),
        "rsquared_score": _number(rsquared(r, p)),
        "absolute_dev_explained_score": _number(absolute_dev_explained(r, p)),
    }


def scored_explanation(
    explanation: str, sequences: list[dict], scores: Sequence[float | None]
) -> dict[str, Any]:
    """`scores`: ev_correlation, rsquared, absolute_dev_explained of all sequences pooled."""
    ev, r2, absolute = (_number(s) for s in scores)
    return {
        "dataclass_name": SCORED_EXPLANATION,
        "explanation": explanation,
        "scored_simulation": {
            "dataclass_name": SCORED_SIMULATION,
            "scored_sequence_simulations": sequences,
            "ev_correlation_score": ev,
            "rsquared_score": r2,
            "absolute_dev_explained_score": absolute,
        },
    }


def neuron_simulation_results(layer: int, neuron: int, explained: list[dict]) -> dict[str, Any]:
    return {
        "dataclass_name": NEURON_SIMULATION_RESULTS,
        "neuron_id": neuron_id(layer, neuron),
        "scored_explanations": explained,
    }


def dumps(obj: dict[str, Any]) -> bytes:
    """Compact JSON as the publication's serializer writes it (NaN as null)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Excerpt:
    """An ActivationRecord as read: its tokens and raw activations."""

    tokens: list[str]
    activations: np.ndarray  # float64


@dataclass(frozen=True)
class NeuronRecordFile:
    """A NeuronRecord as read. Undefined numbers are NaN."""

    top: list[Excerpt]  # most_positive_activation_records, in file order
    random: list[Excerpt]  # random_sample
    by_quantile: list[list[Excerpt]]  # random_sample_by_quantile (none: no band)
    quantile_boundaries: list[float] | None
    moments: tuple[float, float, float, float]  # mean, variance, skewness, kurtosis


@dataclass(frozen=True)
class SimulatedExcerpt:
    """A ScoredSequenceSimulation as read: expected values on the simulator's 0-10 scale (the
    uncalibrated simulation where one is nested), None where none was given."""

    tokens: list[str]
    true_activations: np.ndarray
    expected_activations: list[float | None]
    calibrated: bool  # the stored scores are of predictions calibrated to the neuron's scale


@dataclass(frozen=True)
class ScoredExplanationFile:
    explanation: str
    sequences: list[SimulatedExcerpt]
    scores: tuple[float, float, float]  # ev_correlation, rsquared, absolute_dev_explained


class _Reader:
    """Checks one file's objects, naming the file and the place of every problem."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, where: str, message: str) -> InputError:
        return InputError(f"{self.file}: {where}: {message}")

    def load(self, text: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
        try:  # the standard library's own writer spells NaN as NaN, which orjson refuses
            return json.loads(text)
        except ValueError as err:
            raise InputError(f"{self.file}: not valid JSON ({err})") from None

    def object(self, value: Any, name: str, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a {name} object, found {type(value).__name__}")
        found = value.get("dataclass_name")
        if found is None:
            raise self.fail(where, f"has no dataclass_name (expected {name!r})")
        if found != name:
            raise self.fail(where, f"has dataclass_name {found!r}, expected {name!r}")
        missing = [key for key in REQUIRED[name] if key not in value]
        if missing:
            raise self.fail(where, f"the {name} has no {', '.join(missing)}")
        return value

    def list(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, found {type(value).__name__}")
        return value

    def number(self, value: Any, where: str) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"expected a number, found {value!r}")
        return float(value)

    def numbers(self, value: Any, where: str) -> np.ndarray:
        array = np.asarray(self.list(value, where))
        if array.ndim != 1 or (array.size and array.dtype.kind not in "fiu"):
            raise self.fail(where, "expected a list of numbers")
        return array.astype(np.float64, copy=False)

    def tokens(self, value: Any, where: str) -> list[str]:
        tokens = self.list(value, where)
        if set(map(type, tokens)) - {str}:  # in C: this runs for every token of a dataset
            raise self.fail(where, "expected a list of token strings")
        return tokens

    def excerpt(self, value: Any, where: str) -> Excerpt:
        record = self.object(value, ACTIVATION_RECORD, where)
        tokens = self.tokens(record["tokens"], f"{where}.tokens")
        activations = self.numbers(record["activations"], f"{where}.activations")
        if len(tokens) != len(activations):
            raise self.fail(
                where, f"{len(tokens)} tokens but {len(activations)} activations: one per token"
            )
        return Excerpt(tokens, activations)

    def excerpts(self, value: Any, where: str) -> list[Excerpt]:
        if value is None:
            return []
        return [self.excerpt(v, f"{where}[{i}]") for i, v in enumerate(self.list(value, where))]

    def neuron_id(self, value: Any, layer: int, neuron: int) -> None:
        found = self.object(value, NEURON_ID, "neuron_id")
        if (found["layer_index"], found["neuron_index"]) != (layer, neuron):
            raise self.fail(
                "neuron_id",
                f"says layer {found['layer_index']} neuron {found['neuron_index']}, but the "
                f"file is layer {layer} neuron {neuron}",
            )

    def sequence(self, value: Any, where: str) -> SimulatedExcerpt:
        scored = self.object(value, SCORED_SEQUENCE_SIMULATION, where)
        simulation = self.object(scored["simulation"], SEQUENCE_SIMULATION, f"{where}.simulation")
        scale = simulation["activation_scale"]
        if scale not in (SIMULATED_SCALE, NEURON_SCALE):
            raise self.fail(where, f"activation_scale {scale!r} is not one of the format's")
        calibrated = scale == NEURON_SCALE or simulation.get("uncalibrated_simulation") is not None
        if simulation.get("uncalibrated_simulation") is not None:
            simulation = self.object(
                simulation["uncalibrated_simulation"],
                SEQUENCE_SIMULATION,
                f"{where}.simulation.uncalibrated_simulation",
            )
        tokens = self.tokens(simulation["tokens"], f"{where}.simulation.tokens")
        true = self.numbers(scored["true_activations"], f"{where}.true_activations")
        expected = [
            None if v is None else self.number(v, f"{where}.simulation.expected_activations")
            for v in self.list(simulation["expected_activations"], f"{where}.simulation")
        ]
        if not len(tokens) == len(true) == len(expected):
            raise self.fail(
                where,
                f"{len(tokens)} tokens, {len(true)} true and {len(expected)} expected "
                "activations: one of each per token",
            )
        return SimulatedExcerpt(tokens, true, expected, calibrated)


def read_neuron_record(text: str, file: str, layer: int, neuron: int) -> NeuronRecordFile:
    """The NeuronRecord of `file`, which must be neuron `neuron` of layer `layer`."""
    reader = _Reader(file)
    record = reader.object(reader.load(text), NEURON_RECORD, "the file")
    reader.neuron_id(record["neuron_id"], layer, neuron)
    bands = record.get("random_sample_by_quantile")
    boundaries = record.get("quantile_boundaries")
    where = "random_sample_by_quantile"
    return NeuronRecordFile(
        top=reader.excerpts(
            record.get("most_positive_activation_records"), "most_positive_activation_records"
        ),
        random=reader.excerpts(record.get("random_sample"), "random_sample"),
        by_quantile=[]
        if bands is None
        else [reader.excerpts(b, f"{where}[{i}]") for i, b in enumerate(reader.list(bands, where))],
        quantile_boundaries=None
        if boundaries is None
        else [
            reader.number(b, "quantile_boundaries")
            for b in reader.list(boundaries, "quantile_boundaries")
        ],
        moments=tuple(  # type: ignore[arg-type]
            reader.number(record.get(key), key)
            for key in ("mean", "variance", "skewness", "kurtosis")
        ),
    )


def read_simulation_results(
    text: str, file: str, layer: int, neuron: int
) -> list[ScoredExplanationFile]:
    """The scored explanations of `file` (a .jsonl of exactly one NeuronSimulationResults line)."""
    reader = _Reader(file)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InputError(f"{file}: expected exactly one line, found {len(lines)}")
    results = reader.object(reader.load(lines[0]), NEURON_SIMULATION_RESULTS, "the line")
    reader.neuron_id(results["neuron_id"], layer, neuron)
    explained = []
    for i, value in enumerate(reader.list(results["scored_explanations"], "scored_explanations")):
        where = f"scored_explanations[{i}]"
        scored = reader.object(value, SCORED_EXPLANATION, where)
        explanation = scored["explanation"]
        if not isinstance(explanation, str):
            raise reader.fail(where, f"explanation must be text, found {explanation!r}")
        simulation = reader.object(
            scored["scored_simulation"], SCORED_SIMULATION, f"{where}.scored_simulation"
        )
        inner = f"{where}.scored_simulation.scored_sequence_simulations"
        sequences = reader.list(simulation["scored_sequence_simulations"], inner)
        explained.append(
            ScoredExplanationFile(
                explanation=explanation,
                sequences=[reader.sequence(s, f"{inner}[{j}]") for j, s in enumerate(sequences)],
                scores=tuple(  # type: ignore[arg-type]
                    reader.number(simulation.get(key), f"{where}.{key}")
                    for key in (
                        "ev_correlation_score",
                        "rsquared_score",
                        "absolute_dev_explained_score",
                    )
                ),
            )
        )
    return explained
