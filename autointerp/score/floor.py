"""The chance floor: how well an explanation of ANOTHER neuron of the same layer predicts a
neuron, scored by the same simulator on the same test excerpts. A score means something only as
far as it stands above this floor (the publication's "random explanation" baseline).

For a seeded sample of a layer's neurons, each neuron gets the explanation of the next one in a
seeded cyclic order (a derangement: never its own), with each explainer's lowest usable sample.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from autointerp.activations.excerpts import neurons_of
from autointerp.activations.sampling import select_neurons
from autointerp.config.profiles import SimulatorProfile
from autointerp.llm.client import LLMClient
from autointerp.llm.requests import CallResult
from autointerp.progress import Progress
from autointerp.score.scores import score
from autointerp.simulate.simulations import simulate
from autointerp.storage.schemas import SCORE_KEYS

FLOOR_SPLIT = "test"


def shuffled_explanations(
    explanations: pl.DataFrame, neuron_sample: str, seed: int
) -> pl.DataFrame:
    """Per layer and explainer profile: the sampled neurons, each with another sampled neuron's
    explanation (`source_neuron` says whose), in the explanations table's columns."""
    usable = (
        explanations.filter(pl.col("error").is_null() & pl.col("explanation").is_not_null())
        .sort("layer", "neuron", "explainer", "explainer_hash", "sample")
        .unique(["layer", "neuron", "explainer", "explainer_hash"], keep="first")
    )
    chosen = {(n.layer, n.neuron) for n in select_neurons(neurons_of(usable), neuron_sample)}
    frames = []
    group = ["layer", "explainer", "explainer_hash"]
    for (layer, *_), rows in usable.sort(*group, "neuron").group_by(group, maintain_order=True):
        rows = rows.filter(pl.col("neuron").is_in([n for lay, n in chosen if lay == layer]))
        if rows.height < 2:
            continue  # a single neuron has no other neuron's explanation to borrow
        order = np.random.default_rng([seed, layer]).permutation(rows.height)
        source = order[(np.arange(rows.height) + 1) % rows.height]
        shuffled = rows[order].with_columns(
            source_neuron=rows["neuron"].gather(source),
            explanation=rows["explanation"].gather(source),
        )
        frames.append(shuffled)
    if not frames:
        return usable.head(0).with_columns(source_neuron=pl.lit(None, pl.Int32))
    return pl.concat(frames).sort("layer", "neuron", "explainer")


def shuffled_scores(
    simulator: SimulatorProfile,
    explanations: pl.DataFrame,
    excerpts: pl.DataFrame,
    *,
    neuron_sample: str,
    seed: int,
    client: LLMClient | None,
    progress: Progress | None = None,
) -> tuple[pl.DataFrame, list[CallResult]]:
    """The floor's score rows (the scores table's columns, plus `source_neuron` and the
    simulations' `call_ids`) on the test split, and the simulator's calls. A simulation that
    fails counts against no stage: its neuron is left out of the floor."""
    shuffled = shuffled_explanations(explanations, neuron_sample, seed)
    test = excerpts.filter(pl.col("split") == FLOOR_SPLIT)
    simulations, calls = simulate(simulator, shuffled, test, client=client, progress=progress)
    call_ids = simulations.group_by(SCORE_KEYS).agg(
        pl.col("call_ids").explode().drop_nulls().unique().sort()
    )
    sources = shuffled.select("layer", "neuron", "explainer", "explainer_hash", "source_neuron")
    scores = (
        score(simulations, calibrate=False)
        .join(sources, on=["layer", "neuron", "explainer", "explainer_hash"])
        .join(call_ids, on=list(SCORE_KEYS), how="left")
    )
    return scores, calls


def floor_summary(shuffled: pl.DataFrame) -> pl.DataFrame:
    """Per layer and profile pair: the mean test top_and_random ev_correlation of shuffled
    explanations (`shuffled_mean`) and over how many neurons (`shuffled_neurons`)."""
    rows = shuffled.filter(
        (pl.col("split") == FLOOR_SPLIT) & (pl.col("scored_on") == "top_and_random")
    )
    return rows.group_by("layer", "explainer", "explainer_hash", "simulator", "simulator_hash").agg(
        shuffled_mean=pl.col("ev_correlation").fill_nan(None).mean(),
        shuffled_neurons=pl.col("ev_correlation").fill_nan(None).count(),
    )
