"""What the explain and simulate assets share: one profile at a time, its client, progress, the
calls' audit rows and usage metadata."""

from collections.abc import Callable, Sequence

import dagster as dg
import polars as pl

from autointerp.llm import CallResult, Usage, calls_frame
from autointerp.progress import ProgressLog
from resources.llm import LLMClients

Work = Callable[..., tuple[pl.DataFrame, list[CallResult]]]


def run_profiles(
    context: dg.AssetExecutionContext,
    stage: str,
    profiles: Sequence,
    llm: LLMClients,
    work: Work,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """`work(profile, client=..., progress=...)` for each profile -> (its rows of the stage's
    table, the audit rows of the LLM calls behind them, usage metadata)."""
    frames, audits, results = [], [], []
    for profile in profiles:
        client = llm.client(profile)
        progress = ProgressLog(context.log.info, f"{stage} with {profile.name}", "rows")
        try:
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
