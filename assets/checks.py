"""Asset check results from the core's checks (autointerp/checks.py)."""

import dagster as dg


def check_result(asset: dg.AssetKey, name: str, problems: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none"},
    )
