"""Asset check results from the core's checks (autointerp/checks.py)."""

import dagster as dg


def blocking_check(asset: dg.AssetKey, name: str, description: str) -> dg.AssetCheckSpec:
    """A check that, failing, keeps the steps downstream of its asset from running."""
    return dg.AssetCheckSpec(name, asset=asset, blocking=True, description=description)


def check_result(asset: dg.AssetKey, name: str, problems: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none"},
    )
