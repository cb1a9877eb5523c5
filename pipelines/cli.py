"""The `autointerp` command: materialize a model's graph from the shell, into the same Dagster
instance that `dagster dev -w workspace.yaml` shows (DAGSTER_HOME under AUTOINTERP_HOME)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from autointerp.config.settings import ModelSpec, Settings, load_settings, prepare_home
from autointerp.errors import AutointerpError, ConfigError, InputError
from autointerp.storage.delta import read_table
from pipelines.refresh import contiguous

# The layer-partitioned assets, materialized together per range of layers: one run, one pass.
LAYER_ASSETS = [
    "neuron_records",
    "top_k_excerpts",
    "explanations",
    "explainer_calls",
    "simulations",
    "simulator_calls",
    "shuffled_scores",
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


def _environment(settings: Settings) -> None:
    """Point Dagster at the project's instance, with telemetry off (the network is not assumed)."""
    prepare_home(settings.home)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))
    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")


def materializer(settings: Settings, model: ModelSpec, command: str):
    """Runs of `model`'s graph through the code location's job, refused up front for a model
    that cannot run in these settings (its weights on the hub while the hub is off)."""
    from autointerp.activations.subject_model import hub_refusal
    from pipelines.runs import Materializer

    refusal = hub_refusal(model, settings.allow_hub)
    if refusal:
        raise ConfigError(refusal)
    return Materializer(settings, model, command)


def command_run(args: argparse.Namespace, settings: Settings) -> None:
    model = settings.model(args.model)
    layers = parse_layers(args.layers, model)
    materialize = materializer(settings, model, "run")
    materialize([materialize.key("corpus")], config=materialize.corpus_config(args.excerpts))
    rounds = range(1, settings.revisions.rounds + 1)
    per_layer = LAYER_ASSETS + [
        f"{name}_r{k}"
        for k in rounds
        for name in ("counterexamples", "revised_explanations", "revision_calls")
    ]
    order = [str(layer) for layer in model.layers]
    for low_high in contiguous([str(layer) for layer in layers], order):
        materialize([materialize.key(name) for name in per_layer], low_high)
    summaries = ["score_summary", "compare", *(["revision_summary"] if rounds else [])]
    materialize([materialize.key(name) for name in summaries])
    print_summary(settings, model, layers)


def command_refresh(args: argparse.Namespace, settings: Settings) -> None:
    """Recompute what is out of date, in dependency order: the plan the UI's refresh job runs."""
    from pipelines.refresh import execute, plan_refresh

    model = settings.model(args.model)
    materialize = materializer(settings, model, "refresh")
    plan = plan_refresh(materialize.instance, materialize.assets)
    print("\n".join(plan.lines()))
    execute(plan, materialize)


def print_summary(settings: Settings, model: ModelSpec, layers: Sequence[int]) -> None:
    from autointerp.activations.neuron_records import records_summary

    def read(table: str, **options) -> pl.DataFrame:
        return read_table(
            settings.table_uri(model, table),
            storage_options=settings.storage.storage_options,
            **options,
        )

    records = read(
        "neuron_records",
        partition_column="layer",
        partitions=list(layers),
        columns=["layer", "neuron", "max_activation", "mean", "variance", "kurtosis"],
    )
    summary = read("score_summary").filter(pl.col("layer").is_in(list(layers)))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_width_chars=200):
        print(f"\n{model.name}: neuron records per layer")
        print(records_summary(records))
        print(f"\n{model.name}: explanation scores per layer (ev_correlation, test split)")
        print(summary.drop("explainer_hash", "simulator_hash", strict=False))
        if settings.revisions.rounds:
            revisions = read("revision_summary").filter(pl.col("layer").is_in(list(layers)))
            print(f"\n{model.name}: revision rounds (test split; kept = revision scored higher)")
            print(revisions.drop("explainer_hash", "simulator_hash", strict=False))
    print(f"\nDelta tables: {settings.model_root(model)}")
    print("Browse: make ui  (dagster dev -w workspace.yaml with DAGSTER_HOME set)")


def command_lineage(args: argparse.Namespace, settings: Settings) -> None:
    """Print the chain behind one neuron's scores, from the stored tables (no LLM call)."""
    import json

    from autointerp.lineage.read import revision_history, score_lineage
    from autointerp.lineage.render import render_revisions, render_text, revisions_json, to_json

    model = settings.model(args.model)
    where = (settings.model_root(model), args.layer, args.neuron)
    options = {"storage_options": settings.storage.storage_options}
    lineage = score_lineage(*where, args.explainer, **options)
    rounds = revision_history(*where, **options)
    if args.json:
        print(json.dumps({**to_json(lineage), "revisions": revisions_json(rounds)}, indent=2))
    else:
        print(render_text(lineage))
        if rounds:
            print("\nRevision rounds\n" + render_revisions(rounds))


def command_compare(args: argparse.Namespace, settings: Settings) -> None:
    """Explainers side by side on the neurons they share."""
    from autointerp.score.compare import compare_explainers, format_comparison

    model = settings.model(args.model)
    scores = read_table(
        settings.table_uri(model, "scores"), storage_options=settings.storage.storage_options
    )
    comparison = compare_explainers(
        scores,
        split=args.split,
        n_boot=settings.summaries.bootstrap_samples,
        seed=settings.summaries.bootstrap_seed,
    )
    print(format_comparison(comparison))


def command_ui(args: argparse.Namespace) -> None:
    """Replace this process with `dagster dev` on the project's workspace and instance."""
    from autointerp.config.settings import PROJECT_ROOT

    dagster = str(Path(sys.executable).parent / "dagster")
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    os.execv(dagster, [dagster, "dev", "-w", workspace, "-h", args.host, "-p", str(args.port)])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="autointerp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="materialize a model's graph for some layers")
    run.add_argument("--model", help="a model declared in autointerp.toml (default: its default)")
    run.add_argument("--layers", help="'0,5,29', '0-29' or 'all' (default: all)")
    run.add_argument(
        "--excerpts", type=int, help="a seeded uniform sample of N corpus excerpts (default: all)"
    )
    refresh = sub.add_parser(
        "refresh", help="materialize everything unsynced or missing, in dependency order"
    )
    refresh.add_argument("--model", help="a model declared in autointerp.toml")
    lineage = sub.add_parser("lineage", help="print the chain behind one neuron's score")
    lineage.add_argument("--model", help="a model declared in autointerp.toml")
    lineage.add_argument("--layer", type=int, required=True)
    lineage.add_argument("--neuron", type=int, required=True)
    lineage.add_argument("--explainer", help="only this explainer profile's scores")
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    compare = sub.add_parser("compare", help="explainers side by side on shared neurons")
    compare.add_argument("--model", help="a model declared in autointerp.toml")
    compare.add_argument("--split", default="test", choices=["valid", "test"])
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
        elif args.command == "refresh":
            command_refresh(args, settings)
        elif args.command == "lineage":
            command_lineage(args, settings)
        elif args.command == "compare":
            command_compare(args, settings)
        elif args.command == "ui":
            command_ui(args)
    except AutointerpError as err:
        raise SystemExit(f"autointerp: {err}") from None


if __name__ == "__main__":
    main()
