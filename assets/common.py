"""What the asset modules share: the active profiles and the code versions they give, the blocking
checks, the lineage columns every stage adds, and running an LLM stage profile by profile."""

from collections.abc import Callable, Mapping, Sequence

import dagster as dg
import polars as pl

from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.config.settings import Settings
from autointerp.llm import CallResult, Usage, calls_frame
from autointerp.progress import ProgressLog
from autointerp.safe_text import printable
from autointerp.storage.hashing import content_hash
from resources.delta_io import version_read
from resources.llm import LLMClients

# --- profiles and code versions --------------------------------------------------------------


def explainer_profiles(settings: Settings) -> list[ExplainerProfile]:
    return [settings.profiles.explainer(name) for name in settings.profiles.active_explainers]


def simulator_profiles(settings: Settings) -> list[SimulatorProfile]:
    return [settings.profiles.simulator(name) for name in settings.profiles.active_simulators]


def profiles_version(settings: Settings, logic: str) -> str:
    """A code version from the hashes of the active explainers and simulators."""
    hashes = [p.hash for p in explainer_profiles(settings) + simulator_profiles(settings)]
    return f"{logic}-{content_hash(hashes)}"


def summary_version(settings: Settings, logic: str) -> str:
    """A summary's code version: its logic, and the [summaries] settings set away from their
    defaults."""
    changed = settings.summaries.hash_content()
    return f"{logic}-{content_hash(changed)}" if changed else logic


def active_keys(settings: Settings) -> dict[str, list[str]]:
    """The explainer and simulator names whose rows a write of this stage replaces."""
    return {
        "explainer": list(settings.profiles.active_explainers),
        "simulator": list(settings.profiles.active_simulators),
    }


# --- checks ----------------------------------------------------------------------------------


def blocking_check(asset: dg.AssetKey, name: str, description: str) -> dg.AssetCheckSpec:
    """A check that, failing, keeps the steps downstream of its asset from running."""
    return dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)


def validated(asset: dg.AssetKey, checks: Mapping[str, list[str]]) -> list[dg.AssetCheckResult]:
    """The results of blocking checks run on a frame BEFORE it is written (each a list of
    problems from `autointerp.table_checks`). A failing one fails the step there, so the table
    keeps its previous version and nothing downstream runs on the bad rows."""
    failed = {name: problems for name, problems in checks.items() if problems}
    if failed:
        raise dg.Failure(
            description=printable(
                f"blocking asset check failed on {asset.to_user_string()}, which was not written: "
                + "; ".join(f"{name}: {', '.join(problems)}" for name, problems in failed.items()),
                keep_lines=False,
            ),
            metadata={
                name: printable("; ".join(problems), keep_lines=False)
                for name, problems in failed.items()
            },
        )
    return [dg.AssetCheckResult(asset_key=asset, check_name=name, passed=True) for name in checks]


# --- lineage columns -------------------------------------------------------------------------


def upstream_versions(
    context: dg.AssetExecutionContext, prefix: str, top_k_excerpts: pl.DataFrame, *read: str
) -> pl.DataFrame:
    """Per layer: the corpus and the neuron_records version behind the top_k_excerpts rows, and
    the version at which this step read top_k_excerpts and each table in `read`."""
    return (
        top_k_excerpts.select("layer", "corpus_id", "neuron_records_version")
        .unique("layer")
        .with_columns(
            **{
                f"{name}_version": pl.lit(
                    version_read(context, dg.AssetKey([prefix, name])), dtype=pl.Int64
                )
                for name in ("top_k_excerpts", *read)
            }
        )
    )


# --- LLM stages ------------------------------------------------------------------------------

Work = Callable[..., tuple[pl.DataFrame, list[CallResult]]]


def run_profiles(
    context: dg.AssetExecutionContext,
    stage: str,
    profiles: Sequence[ExplainerProfile | SimulatorProfile],
    llm: LLMClients,
    work: Work,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """`work(profile, client=..., progress=...)` for each profile -> (its rows of the stage's
    table, the audit rows of the LLM calls behind them, usage metadata)."""
    frames, audits, results = [], [], []
    for profile in profiles:
        client = llm.client(profile)
        progress = ProgressLog(
            context.log.info,
            f"{stage} with {profile.name}",
            "rows",
            detail=client.activity if client is not None else None,
        )
        try:
            with progress:
                frame, calls = work(profile, client=client, progress=progress)
        finally:
            if client is not None:
                client.close()
        frames.append(frame)
        audits.append(audit_rows(frame, calls, stage, profile.name))
        results += calls
    usage = Usage.of(results)
    metadata = {f"llm_{key}": value for key, value in vars(usage).items() if value is not None}
    return pl.concat(frames), pl.concat(audits), metadata


def audit_rows(
    frame: pl.DataFrame, calls: list[CallResult], stage: str, profile: str
) -> pl.DataFrame:
    """The audit rows of one profile's calls, each under the layer and explainer whose rows cite
    it (the keys a later write of that layer and explainer replaces)."""
    owners = (
        frame.select("layer", "explainer", call_id="call_ids")
        .explode("call_id")
        .drop_nulls()
        .unique()
    )
    # Sorted by call id: a lineage read of a few calls then skips most row groups.
    return (
        owners.join(calls_frame(calls).unique("call_id", keep="first"), on="call_id", how="inner")
        .with_columns(stage=pl.lit(stage), profile=pl.lit(profile))
        .sort("layer", "call_id")
    )
