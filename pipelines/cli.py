"""The `autointerp` command: materialize a model's graph from the shell, into the same Dagster
instance that `dagster dev -w workspace.yaml` shows (DAGSTER_HOME under AUTOINTERP_HOME)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from autointerp.config import ModelSpec, Settings, load_settings, prepare_home
from autointerp.errors import AutointerpError, InputError
from autointerp.summary import records_summary

# Dagster's step events at DEBUG drown the progress lines; the UI keeps them all.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


# The layer-partitioned assets, materialized together per range of layers: one run, one pass.
LAYER_ASSETS = [
    "neuron_records",
    "top_k_excerpts",
    "explanations",
    "explainer_calls",
    "simulations",
    "simulator_calls",
    "scores",
]


def parse_layers(text: str | None, model: ModelSpec) -> list[int]:
    """'0,5,29', '0-29', 'all' (the default) -> sorted layer indices, checked against the model."""
    if text is None or text.strip() == "all":
        return model.layers
    layers: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            layers.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise InputError(f"--layers {text!r}: expected e.g. '0,5,29', '0-29' or 'all'") from None
    bad = sorted(layer for layer in layers if not 0 <= layer < model.num_layers)
    if bad or not layers:
        raise InputError(
            f"layers {bad or text!r} out of range: {model.name} has layers 0-{model.num_layers - 1}"
        )
    return sorted(layers)


def contiguous_ranges(layers: Sequence[int]) -> list[tuple[int, int]]:
    """A run covers a range of partitions, so '0,1,2,7' runs as (0, 2) and (7, 7)."""
    ranges: list[tuple[int, int]] = []
    for layer in layers:
        if ranges and ranges[-1][1] == layer - 1:
            ranges[-1] = (ranges[-1][0], layer)
        else:
            ranges.append((layer, layer))
    return ranges


def _root_cause(error) -> str:
    """The user's error inside Dagster's wrapping (a SerializableErrorInfo chain)."""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    return error.message.strip()


def _environment(settings: Settings) -> None:
    """Point Dagster at the project's instance, with telemetry off (the network is not assumed)."""
    prepare_home(settings.home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")


def command_run(args: argparse.Namespace, settings: Settings) -> None:
    import dagster as dg

    from assets import model_assets
    from pipelines.definitions import resources

    model = settings.model(args.model)
    layers = parse_layers(args.layers, model)
    assets = model_assets(settings, model)
    instance = dg.DagsterInstance.get()
    prefix = model.key_prefix

    def materialize(names: list[str], run_config: dict | None = None, **kwargs) -> None:
        result = dg.materialize(
            assets,
            selection=[dg.AssetKey([prefix, name]) for name in names],
            instance=instance,
            resources=resources(settings),
            run_config={**QUIET_LOGS, **(run_config or {})},
            raise_on_error=False,
            **kwargs,
        )
        if not result.success:
            errors = [
                _root_cause(event.step_failure_data.error)
                for event in result.get_step_failure_events()
                if event.step_failure_data.error
            ]
            raise SystemExit(f"autointerp: run {result.run_id} failed: " + "; ".join(errors))
        print(f"run {result.run_id}: materialized {', '.join(names)}", file=sys.stderr)

    materialize(
        ["corpus"],
        {"ops": {f"{prefix}__corpus": {"config": {"max_excerpts": args.excerpts}}}},
    )
    for low, high in contiguous_ranges(layers):
        materialize(
            LAYER_ASSETS,
            tags={
                "dagster/asset_partition_range_start": str(low),
                "dagster/asset_partition_range_end": str(high),
            },
        )
    materialize(["score_summary"])
    print_summary(settings, model, layers)


def print_summary(settings: Settings, model: ModelSpec, layers: Sequence[int]) -> None:
    from autointerp.delta import read_table

    root = settings.delta_root / model.key_prefix
    records = read_table(
        str(root / "neuron_records"),
        partition_column="layer",
        partitions=list(layers),
        columns=["layer", "neuron", "max_activation", "mean", "variance", "kurtosis"],
    )
    summary = read_table(str(root / "score_summary")).filter(pl.col("layer").is_in(list(layers)))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, fmt_str_lengths=40):
        print(f"\n{model.name}: neuron records per layer")
        print(records_summary(records))
        print(f"\n{model.name}: explanation scores per layer (ev_correlation, test split)")
        print(summary.drop("explainer_hash", "simulator_hash", strict=False))
    print(f"\nDelta tables: {root}")
    print("Browse: make ui  (dagster dev -w workspace.yaml with DAGSTER_HOME set)")


def command_ui(args: argparse.Namespace) -> None:
    """Replace this process with `dagster dev` on the project's workspace and instance."""
    from autointerp.config import PROJECT_ROOT

    dagster = str(Path(sys.executable).parent / "dagster")
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    os.execv(dagster, [dagster, "dev", "-w", workspace, "-h", args.host, "-p", str(args.port)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="autointerp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize a model's graph for some layers")
    run.add_argument("--model", help="a model declared in autointerp.toml (default: its default)")
    run.add_argument("--layers", help="'0,5,29', '0-29' or 'all' (default: all)")
    run.add_argument("--excerpts", type=int, help="use the first N corpus excerpts (default: all)")
    ui = sub.add_parser("ui", help="start the Dagster UI on this project's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        _environment(settings)
        if args.command == "run":
            if args.excerpts is not None and args.excerpts < 1:
                raise InputError("--excerpts must be at least 1")
            command_run(args, settings)
        elif args.command == "ui":
            command_ui(args)
    except AutointerpError as err:
        raise SystemExit(f"autointerp: {err}") from None


if __name__ == "__main__":
    main()
