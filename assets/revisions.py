"""Revision rounds, each an asset: counterexamples_rK and revised_explanations_rK (with the
audit of their LLM calls, revision_calls_rK), and revision_summary over all rounds.

Round 1 starts from each neuron's best explanation sample on the calibration split; round K
revises what round K-1 carried forward. A revision is kept only when it scores higher on the
calibration split; the test split is only reported.
"""

from dataclasses import replace

import dagster as dg
import polars as pl

from assets.common import (
    audit_rows,
    gpu_step,
    summary_version,
    table_output,
    table_preview,
    upstream_versions,
)
from autointerp.activations.excerpts import neurons_of
from autointerp.activations.sampling import select_neurons
from autointerp.config.profiles import BUILTIN_EXPLAINERS, IMPORTED
from autointerp.config.settings import ModelSpec, Settings
from autointerp.errors import ConfigError
from autointerp.explain.baseline import TOKEN_STATISTICS_EXPLAINER
from autointerp.revise.counterexamples import find_counterexamples
from autointerp.revise.mining import mining_candidates
from autointerp.revise.revisions import current_explanations, revise_round
from autointerp.revise.summary import revision_summary
from autointerp.storage.hashing import content_hash
from resources.llm import LLMClients
from resources.subject_models import SubjectModels

LOGIC_VERSION = "revisions-3"


def revision_profiles(settings: Settings) -> tuple:
    """(the explainer whose explanations are revised, the simulator that scores them, the
    explainer profile that writes the texts and revisions). An imported explainer writes nothing:
    the token-statistics baseline revises for it unless `[revisions] reviser` names another."""
    spec, profiles = settings.revisions, settings.profiles
    explainer = profiles.explainer(spec.explainer or profiles.active_explainers[0])
    simulator = profiles.simulator(spec.simulator or profiles.active_simulators[0])
    if spec.reviser:
        reviser = profiles.explainer(spec.reviser)
    else:
        reviser = (
            BUILTIN_EXPLAINERS[TOKEN_STATISTICS_EXPLAINER]
            if explainer.kind == IMPORTED
            else explainer
        )
    for role, profile in (("simulator", simulator), ("reviser", reviser)):
        if profile.kind == IMPORTED:
            raise ConfigError(
                f"[revisions] {role} {profile.name!r} is imported: it only holds what its dataset "
                "holds, and cannot simulate or write revised explanations"
            )
    return explainer, simulator, reviser


def _of(frame: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
    """The rows of `frame` of the neurons in `current`."""
    return frame.join(current.select("layer", "neuron"), on=["layer", "neuron"], how="semi")


def _sampled(current: pl.DataFrame, neuron_sample: str) -> pl.DataFrame:
    """The revision's neuron sample, taken per layer."""
    chosen = select_neurons(neurons_of(current), neuron_sample)
    keep = pl.DataFrame(
        [(n.layer, n.neuron) for n in chosen],
        schema={"layer": pl.Int32, "neuron": pl.Int32},
        orient="row",
    )
    return _of(current, keep)


def round_group(model: ModelSpec, round_number: int) -> str:
    """Each revision round is a group of its own in the UI: its assets and their checks."""
    return f"{model.key_prefix}_round_{round_number}"


def round_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition, round_number: int
) -> dg.AssetsDefinition:
    prefix = model.key_prefix
    explainer, simulator, reviser = revision_profiles(settings)
    spec = settings.revisions
    # The round count is left out: adding a round leaves the earlier ones in sync.
    settings_hash = content_hash(
        explainer.hash,
        simulator.hash,
        *([reviser.hash] if reviser is not explainer else []),
        replace(spec, rounds=0).hash_content(),
    )
    weights = settings.weights_of(model)
    version = f"{LOGIC_VERSION}-r{round_number}-{settings_hash}"
    previous = (
        {
            "explanations": dg.AssetIn(key=[prefix, "explanations"]),
            "scores": dg.AssetIn(key=[prefix, "scores"]),
        }
        if round_number == 1
        else {"previous": dg.AssetIn(key=[prefix, f"revised_explanations_r{round_number - 1}"])}
    )
    # Mining the quantile-band samples reads them (and their tokens, from the corpus).
    mined = (
        {
            "neuron_records": dg.AssetIn(
                key=[prefix, "neuron_records"],
                metadata={"columns": ["neuron", "quantile_excerpt_ids", "quantile_activations"]},
            ),
            "corpus": dg.AssetIn(
                key=[prefix, "corpus"], metadata={"columns": ["excerpt_id", "tokens"]}
            ),
        }
        if spec.mine_quantile_samples
        else {}
    )
    read_by_round = {
        dg.AssetKey([prefix, "top_k_excerpts"]),
        *(dg.AssetKey(asset_in.key.path) for asset_in in previous.values()),
    }
    read_by_mining = {dg.AssetKey(asset_in.key.path) for asset_in in mined.values()}
    written = {
        "group_name": round_group(model, round_number),
        "code_version": version,
        "kinds": {"delta", "polars"},
        "metadata": {
            "partition_column": "layer",
            "replace_within": {"explainer": [explainer.name]},
        },
    }

    @dg.multi_asset(
        name=f"{prefix}__revise_r{round_number}",
        ins={
            **previous,
            "top_k_excerpts": dg.AssetIn(key=[prefix, "top_k_excerpts"]),
            **mined,
        },
        outs={
            "counterexamples": dg.AssetOut(
                key=[prefix, f"counterexamples_r{round_number}"],
                description=(
                    f"Round {round_number} counterexamples per neuron: texts the explainer "
                    "generated (should / should not activate) and excerpts mined outside the "
                    "scoring splits where the simulator missed most, with their true "
                    "activations from the subject model, the prediction and the miss."
                ),
                **written,
            ),
            "revised_explanations": dg.AssetOut(
                key=[prefix, f"revised_explanations_r{round_number}"],
                description=(
                    f"Round {round_number}: the revised explanation per neuron, its calibration "
                    "score against the previous one's, whether it was kept, and the explanation "
                    "carried forward with its calibration and test scores."
                ),
                **written,
            ),
            "revision_calls": dg.AssetOut(
                key=[prefix, f"revision_calls_r{round_number}"],
                description=f"Audit of round {round_number}'s LLM calls (as explainer_calls).",
                **written,
            ),
        },
        # The revision reads the counterexamples, not the corpus and records they were mined
        # from: the lineage shows the round as mining, then revising.
        internal_asset_deps={
            "counterexamples": {*read_by_round, *read_by_mining},
            "revision_calls": {*read_by_round, *read_by_mining},
            "revised_explanations": {
                *read_by_round,
                dg.AssetKey([prefix, f"counterexamples_r{round_number}"]),
            },
        },
        partitions_def=layers,
        backfill_policy=dg.BackfillPolicy.single_run(),
        can_subset=False,
        **gpu_step(settings),  # runs counterexamples through the subject model
    )
    def revise(
        context: dg.AssetExecutionContext,
        top_k_excerpts: pl.DataFrame,
        subject_models: SubjectModels,
        llm: LLMClients,
        **upstream: pl.DataFrame,
    ):
        excerpts = top_k_excerpts
        if round_number == 1:
            mine = upstream["explanations"].filter(
                (pl.col("explainer") == explainer.name)
                & (pl.col("explainer_hash") == explainer.hash)
            )
            current = current_explanations(mine, upstream["scores"], simulator)
        else:
            current = upstream["previous"].filter(pl.col("explainer") == explainer.name)
        current = _sampled(current, spec.neuron_sample)
        context.log.info(f"round {round_number}: revising {current.height} neurons")
        # Only the revised neurons' rows: mining explodes every record it is given into
        # candidates, and a layer holds far more neurons than a round revises.
        excerpts = _of(excerpts, current)
        records = upstream.get("neuron_records")
        # Each step's calls (texts, their simulations, mining, revisions, scoring) report as
        # they go: a round on a slow server takes long, and must not be silent.
        explainer_client = llm.client(reviser, report=context.log.info)
        simulator_client = llm.client(simulator, report=context.log.info)
        candidates = mining_candidates(
            excerpts,
            neuron_records=None if records is None else _of(records, current),
            corpus=upstream.get("corpus"),
        )
        counterexamples, found_calls, cited = find_counterexamples(
            round_number,
            current,
            excerpts,
            explainer,
            simulator,
            # Probing runs the model through the layers revised, no further.
            subject_models.load(weights, through_layer=max(map(int, context.partition_keys))),
            explainer_client=explainer_client,
            simulator_client=simulator_client,
            candidates=candidates,
            spec=spec,
            reviser=reviser,
        )
        subject_models.release()  # the revision and its write need no model
        revised, revise_calls = revise_round(
            round_number,
            current,
            counterexamples,
            excerpts,
            explainer,
            simulator,
            explainer_client=explainer_client,
            simulator_client=simulator_client,
            spec=spec,
            reviser=reviser,
        )
        calls = pl.concat(
            [
                audit_rows(cited, found_calls, "counterexamples", explainer.name),
                audit_rows(revised, revise_calls, "revise", explainer.name),
            ]
        ).unique(["layer", "explainer", "call_id"], keep="first")
        # Each row names the versions of the tables it was computed from, as scores do.
        read = ("explanations", "scores") if round_number == 1 else ()
        if round_number > 1:
            read = (f"revised_explanations_r{round_number - 1}",)
        versions = upstream_versions(context, prefix, top_k_excerpts, *read)
        counterexamples = counterexamples.join(versions, on="layer", how="left")
        revised = revised.join(versions, on="layer", how="left")

        def key(name: str) -> dg.AssetKey:
            return dg.AssetKey([prefix, f"{name}_r{round_number}"])

        yield table_output(
            context, calls, output_name="revision_calls", asset_key=key("revision_calls")
        )
        yield table_output(
            context,
            counterexamples,
            output_name="counterexamples",
            asset_key=key("counterexamples"),
        )
        yield table_output(
            context,
            revised,
            output_name="revised_explanations",
            asset_key=key("revised_explanations"),
            metadata={"llm_calls": len(found_calls) + len(revise_calls)},
            per_partition=lambda rows: {
                "kept": int(rows["kept"].sum()),
                "mean_reported_score": dg.MetadataValue.float(
                    float(rows["reported_score"].fill_nan(None).mean() or 0.0)
                ),
            },
        )

    return revise


def revisions_skipped(settings: Settings, model: ModelSpec) -> str | None:
    """Why `model` has no revision rounds, or None when it has them."""
    if settings.weights_of(model) is None:
        return (
            f"{model.name} is imported without weights: its revision rounds are skipped (set "
            "weights = a declared model with its activations, to run counterexamples through)"
        )
    return None


def revision_summary_asset(settings: Settings, model: ModelSpec) -> dg.AssetsDefinition:
    prefix = model.key_prefix
    rounds = range(1, settings.revisions.rounds + 1)

    @dg.asset(
        key=[prefix, "revision_summary"],
        ins={f"r{k}": dg.AssetIn(key=[prefix, f"revised_explanations_r{k}"]) for k in rounds},
        group_name=prefix,
        code_version=summary_version(
            settings, f"{LOGIC_VERSION}-summary-{settings.revisions.rounds}"
        ),
        description=(
            "Per round and layer: mean test score after and before the round, the share of "
            "neurons whose revision was kept and whose score rose, and the mean change with a "
            "bootstrap 95% interval."
        ),
        kinds={"delta", "polars"},
    )
    def summary(context: dg.AssetExecutionContext, **revised: pl.DataFrame) -> dg.Output:
        frame = revision_summary(
            pl.concat(list(revised.values()), how="diagonal_relaxed"),
            seed=settings.summaries.bootstrap_seed,
            samples=settings.summaries.bootstrap_samples,
        )
        per_round = {
            f"round_{k}": table_preview(frame.filter(pl.col("round") == k), rows=100)
            for k in rounds
        }
        return table_output(context, frame, metadata=per_round)

    return summary


def revision_assets(
    settings: Settings, model: ModelSpec, layers: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    """The revision rounds; none for an imported model without `weights`, whose counterexample
    texts no model could run (`revisions_skipped` says why)."""
    if settings.revisions.rounds < 1 or revisions_skipped(settings, model):
        return []
    rounds = range(1, settings.revisions.rounds + 1)
    return [
        *(round_assets(settings, model, layers, k) for k in rounds),
        revision_summary_asset(settings, model),
    ]
