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
from autointerp.links import VIEW_HOST, VIEW_PORT, viewer_url
from autointerp.safe_text import printable
from autointerp.storage.delta import read_table, table_version
from pipelines.console import keep_trace, one_line
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
            first, last = int(low), int(high or low)
            if last < first:
                raise InputError(
                    f"--layers {text!r}: the range {part.strip()} is empty (write {last}-{first})"
                )
            layers.update(range(first, last + 1))
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
    from pipelines.run_records import fail_dead_runs
    from pipelines.runs import Materializer

    refusal = hub_refusal(model, settings.allow_hub)
    if refusal:
        raise ConfigError(refusal)
    materialize = Materializer(settings, model, command, log_home=settings.home)
    for run_id in fail_dead_runs(materialize.instance):
        print(f"run {run_id}: its process had died; marked failed", file=sys.stderr)
    return materialize


def command_run(args: argparse.Namespace, settings: Settings) -> None:
    from assets.neuron_records import shard_names
    from assets.revisions import revisions_skipped

    model = settings.model(args.model)
    layers = parse_layers(args.layers, model)
    materialize = materializer(settings, model, "run")
    if model.imported:
        if args.excerpts is not None:
            raise InputError(
                f"--excerpts samples a corpus, and {model.name} is imported: its excerpts are "
                "its dataset's records (sample neurons with neuron_sample in its [models] section)"
            )
        # Imported per layer, in the run of the layer: records, their corpus, the explanations.
        imported = ["corpus", "imported_explanations"]
    else:
        materialize([materialize.key("corpus")], config=materialize.corpus_config(args.excerpts))
        imported = shard_names(settings)  # the capture's shard steps, if any
    skipped = revisions_skipped(settings, model)
    if skipped:
        print(f"note: {skipped}", file=sys.stderr)
    rounds = range(1, 0 if skipped else settings.revisions.rounds + 1)
    per_layer = (
        imported
        + LAYER_ASSETS
        + [
            f"{name}_r{k}"
            for k in rounds
            for name in ("counterexamples", "revised_explanations", "revision_calls")
        ]
    )
    order = [str(layer) for layer in model.layers]
    for low_high in contiguous([str(layer) for layer in layers], order):
        materialize([materialize.key(name) for name in per_layer], low_high)
    summaries = ["score_summary", "compare", *(["revision_summary"] if rounds else [])]
    materialize([materialize.key(name) for name in summaries])
    print_summary(settings, model, layers, revisions=bool(rounds))


def command_refresh(args: argparse.Namespace, settings: Settings) -> None:
    """Recompute what is out of date, in dependency order: the plan the UI's refresh job runs."""
    from pipelines.refresh import execute, plan_refresh

    model = settings.model(args.model)
    materialize = materializer(settings, model, "refresh")
    plan = plan_refresh(materialize.instance, materialize.assets)
    print("\n".join(plan.lines()))
    execute(plan, materialize)


def print_summary(
    settings: Settings, model: ModelSpec, layers: Sequence[int], *, revisions: bool
) -> None:
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
    # Rows of profiles not active now (or edited since) stay in the table, but are not shown
    # beside the current ones as if comparable: another corpus or prompt may lie behind them.
    profiles = settings.for_model(model).profiles  # an imported model's own profiles included

    def active(role: str, names: list[str]) -> pl.Expr:
        hashes = [getattr(profiles, role)(name).hash for name in names]
        hash_ = pl.col(f"{role}_hash")  # null on a row of neurons that were all dropped
        return pl.col(role).is_in(names) & (hash_.is_in(hashes) | hash_.is_null())

    current = active("explainer", profiles.active_explainers) & active(
        "simulator", profiles.active_simulators
    )
    others = summary.filter(~current).height
    summary = summary.filter(current)
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_width_chars=200):
        print(f"\n{model.name}: neuron records per layer")
        print(records_summary(records))
        print(f"\n{model.name}: explanation scores per layer (ev_correlation, test split)")
        print(summary.drop("explainer_hash", "simulator_hash", strict=False))
        if others:
            print(
                f"({others} rows of profiles not active now, or edited since, are not shown: "
                "the score_summary table keeps them)"
            )
        if revisions:
            rounds = read("revision_summary").filter(pl.col("layer").is_in(list(layers)))
            print(f"\n{model.name}: revision rounds (test split; kept = revision scored higher)")
            print(rounds.drop("explainer_hash", "simulator_hash", strict=False))
    print(f"\nDelta tables: {settings.model_root(model)}")
    print(
        f"Neuron viewer: autointerp view --model {model.name}  (make view), then open "
        f"http://{VIEW_HOST}:{VIEW_PORT}/m/{model.name}"
    )
    print("Runs and assets: make ui  (dagster dev -w workspace.yaml with DAGSTER_HOME set)")


def command_lineage(args: argparse.Namespace, settings: Settings) -> None:
    """Print the chain behind one neuron's scores, from the stored tables (no LLM call)."""
    import json

    from autointerp.lineage.read import revision_history, score_lineage
    from autointerp.lineage.render import render_revisions, render_text, revisions_json, to_json

    model = settings.model(args.model)
    where = (settings.model_root(model), args.layer, args.neuron)
    options = {"storage_options": settings.storage.storage_options}
    lineage = score_lineage(*where, args.explainer, **options)
    rounds = revision_history(*where, args.explainer, **options)
    if args.json:
        print(json.dumps({**to_json(lineage), "revisions": revisions_json(rounds)}, indent=2))
    else:
        print(render_text(lineage))
        if rounds:
            print("\nRevision rounds\n" + render_revisions(rounds))
        page = viewer_url(model.name, args.layer, args.neuron)
        print(f"\nNeuron viewer: {page}  (autointerp view --model {model.name})")


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


def command_estimate(args: argparse.Namespace, settings: Settings) -> None:
    """The LLM cost of explaining, simulating and revising every layer of a model."""
    from autointerp.activations.subject_model import load_subject_model
    from autointerp.estimate import estimate, format_estimate

    if args.rate_limit <= 0 or (args.tokens_per_minute or 1) <= 0:
        raise InputError("--rate-limit and --tokens-per-minute must be above 0")
    model = settings.model(args.model)
    profiles = settings.profiles
    neurons = args.neurons_per_layer
    if neurons is None:  # the model says: it is loaded as a run loads it (no hub unless allowed)
        subject = load_subject_model(
            model,
            cache_dir=settings.model_cache,
            downloads=settings.downloads,
            allow_hub=settings.allow_hub,
        )
        neurons = subject.neurons_per_layer
    result = estimate(
        model=model.name,
        layers=model.num_layers,
        neurons_per_layer=neurons,
        excerpt_tokens=settings.corpus.excerpt_tokens,
        records=settings.records,
        explainer=profiles.explainer(args.explainer or profiles.active_explainers[0]),
        simulator=profiles.simulator(args.simulator or profiles.active_simulators[0]),
        floor_sample=settings.summaries.floor_sample,
        revisions=settings.revisions,
        neuron_sample=args.neuron_sample,
    )
    print(format_estimate(result, args.rate_limit, args.tokens_per_minute))


def command_export_openai(args: argparse.Namespace, settings: Settings) -> None:
    """Records, explanations and scored simulations in OpenAI's published layout."""
    from autointerp.interchange.dataset import model_source
    from autointerp.interchange.exporting import (
        EXPORTED_SET,
        EXPORTED_SPLIT,
        READ,
        export_openai,
        read_layer,
    )

    model = settings.model(args.model)
    layers = parse_layers(args.layers, model)
    profiles = settings.for_model(model).profiles
    explainer = args.explainer or profiles.active_explainers[0]
    simulator = args.simulator or profiles.active_simulators[0]
    root, options = settings.model_root(model), settings.storage.storage_options
    versions = _table_versions(root, [*READ, "corpus"], options, model)
    manifest = {
        "format": "OpenAI neuron-explainer: collated-activations/, explanations/",
        "model": model.name,
        "model_source": model_source(model),
        "explainer": explainer,
        "simulator": simulator,
        "scores": f"{EXPORTED_SPLIT} split, {EXPORTED_SET}, as stored in the scores table",
        "expected_activations": "the simulator's 0-10 values, uncalibrated; null where none",
        "tables": {"root": root, "versions": versions},
    }
    written = export_openai(
        Path(args.out),
        layers,
        lambda layer: read_layer(root, layer, explainer, simulator, versions, options),
        manifest,
    )
    for layer, counts in written["layers"].items():
        print(
            f"layer {layer}: {counts['neurons']} neuron records, {counts['explained']} "
            "explanation files"
        )
    print(f"written: {Path(args.out).resolve()}")


def command_export_dataset(args: argparse.Namespace, settings: Settings) -> None:
    """Every table of the model as Parquet, with a dataset card."""
    from assets import model_assets
    from autointerp.interchange.dataset import export_dataset

    model = settings.model(args.model)
    root, options = settings.model_root(model), settings.storage.storage_options
    names = [key.path[-1] for asset in model_assets(settings, model) for key in asset.keys]
    tables = [name for name in names if table_version(f"{root}/{name}", options) is not None]
    _table_versions(root, ["neuron_records", "scores"], options, model)  # the least worth sharing
    metadata = export_dataset(
        Path(args.out),
        root,
        tables,
        model=model,
        corpus=None if model.imported else settings.corpus,
        profiles=settings.for_model(model).profiles,
        storage_options=options,
    )
    for table in metadata["tables"]:
        print(f"{table['name']}: {table['rows']:,} rows (Delta version {table['version']})")
    print(f"written: {Path(args.out).resolve()} (README.md is the dataset card)")


def _table_versions(
    root: str, tables: Sequence[str], options: dict[str, str], model: ModelSpec
) -> dict[str, int]:
    """Each table's latest version, pinned for a whole export; an error names the missing."""
    versions = {name: table_version(f"{root}/{name}", options) for name in tables}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        raise InputError(
            f"{model.name} has no {', '.join(missing)} table yet: materialize it first "
            f"(autointerp run --model {model.name})"
        )
    return {name: int(version) for name, version in versions.items() if version is not None}


def command_repair(args: argparse.Namespace, settings: Settings) -> None:
    """Mark dead runs failed, bring each of the model's tables back to a readable state, and
    say what to materialize again."""
    import dagster as dg

    from autointerp.storage.repair import repair_root
    from pipelines.run_records import fail_dead_runs

    model = settings.model(args.model)
    instance = dg.DagsterInstance.get()
    for run_id in fail_dead_runs(instance):
        print(f"run {run_id}: its process had died; marked failed")
    reports = repair_root(settings.model_root(model))
    for report in reports:
        if report.rematerialize.get("*"):  # a torn commit that names nothing: ask Dagster
            found = _partitions_written(instance, model, report)
            if found:
                report.rematerialize = {"layer": found}
        for line in report.lines():
            print(printable(line, keep_lines=False))
    print(rebuild_advice(reports, model))


def _partitions_written(instance, model: ModelSpec, report) -> set[str]:
    """The partitions the runs that made a table's moved commits materialized, by the Delta
    version each materialization recorded; none when the records do not say."""
    import dagster as dg

    key = dg.AssetKey([model.key_prefix, Path(report.table).name])
    found: set[str] = set()
    for record in instance.fetch_materializations(key, limit=1000).records:
        materialization = record.asset_materialization
        version = materialization.metadata.get("delta_version") if materialization else None
        if version is not None and version.value in report.moved_commits:
            if materialization.partition is None:
                return set()  # an unpartitioned write: the advice stays "everything"
            found.add(materialization.partition)
    return found


def rebuild_advice(reports: Sequence, model: ModelSpec) -> str:
    """The one command that materializes again what repairs took out of the tables."""
    layers: set[str] = set()
    others: set[str] = set()  # keyed or unpartitioned tables (corpus, summaries)
    everything = False
    for report in reports:
        for column, values in report.rematerialize.items():
            if column == "layer" and "*" not in values:
                layers |= values
            elif column in ("layer", "*"):
                everything = True
            else:
                others.add(Path(report.table).name)
    if not (layers or others or everything):
        return "nothing to materialize again"
    if everything:
        chosen = ""
    else:  # a corpus or summary alone is rebuilt by a run of any one layer
        chosen = " --layers " + ",".join(sorted(layers or {str(model.layers[0])}, key=int))
    also = (
        f" (with the run's --excerpts; it also rebuilds {', '.join(sorted(others))})"
        if others
        else ""
    )
    return f"to materialize again: autointerp run --model {model.name}{chosen}{also}"


def command_maintain(args: argparse.Namespace, settings: Settings) -> None:
    """Compact and vacuum the model's tables, keeping the versions lineage reads."""
    from pipelines.maintenance import maintain_model

    model = settings.model(args.model)
    for report in maintain_model(settings, model, args.retention_hours):
        print(printable(report.line(), keep_lines=False))


def command_view(args: argparse.Namespace, settings: Settings) -> None:
    """Serve the neuron viewer over the Delta tables, or write a static copy of it."""
    from autointerp.viewer.pages import Site

    model = settings.model(args.model)
    if args.layers and not args.export:
        raise InputError("--layers chooses what --export writes; the server shows every layer")
    if args.export:
        from autointerp.viewer.export import export_site

        layers = parse_layers(args.layers, model) if args.layers else None
        site = Site(settings, whole_layers=True)
        done = export_site(site, model.name, Path(args.export), layers)
        print(
            f"wrote {done.pages} pages ({done.bytes / 1e6:.1f} MB) of {model.name}, layers "
            f"{', '.join(map(str, done.layers))}, to {done.folder}; open "
            f"{(done.folder / 'index.html').resolve()}"
        )
        return
    from autointerp.viewer.web import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"autointerp view: serving on {args.host}, beyond this machine; the viewer has no "
            "authentication",
            file=sys.stderr,
        )
    print(f"autointerp view: http://{args.host}:{args.port}/m/{model.name}  (Ctrl-C stops)")
    sys.stdout.flush()
    serve(Site(settings), args.host, args.port, default_model=model.name)


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
    cost = sub.add_parser(
        "estimate", help="LLM calls, tokens, dollars and hours of a run over a whole model"
    )
    cost.add_argument("--model", help="a model declared in autointerp.toml")
    cost.add_argument("--explainer", help="an explainer profile (default: the first active)")
    cost.add_argument("--simulator", help="a simulator profile (default: the first active)")
    cost.add_argument(
        "--neuron-sample",
        help="'all', 'first:N' or 'random:N:SEED' per layer (default: the explainer's)",
    )
    cost.add_argument(
        "--rate-limit", type=float, default=500.0, help="requests per minute (default: 500)"
    )
    cost.add_argument("--tokens-per-minute", type=float, help="a token rate limit too")
    cost.add_argument(
        "--neurons-per-layer", type=int, help="instead of loading the model to count them"
    )
    export = sub.add_parser("export", help="write a model's results in a shareable format")
    formats = export.add_subparsers(dest="format", required=True)
    openai = formats.add_parser(
        "openai", help="records, explanations and scored simulations in OpenAI's published layout"
    )
    openai.add_argument("--model", help="a model declared in autointerp.toml")
    openai.add_argument("--layers", help="'0,5,29', '0-29' or 'all' (default: all)")
    openai.add_argument("--out", required=True, help="a new folder to write")
    openai.add_argument("--explainer", help="the explainer profile (default: the first active)")
    openai.add_argument("--simulator", help="the simulator profile (default: the first active)")
    dataset = formats.add_parser("dataset", help="the tables as Parquet with a dataset card")
    dataset.add_argument("--model", help="a model declared in autointerp.toml")
    dataset.add_argument("--out", required=True, help="a new folder to write")
    repair = sub.add_parser(
        "repair", help="restore damaged tables to their last readable state; fail dead runs"
    )
    repair.add_argument("--model", help="a model declared in autointerp.toml")
    maintain = sub.add_parser(
        "maintain", help="compact and vacuum a model's tables, keeping what lineage reads"
    )
    maintain.add_argument("--model", help="a model declared in autointerp.toml")
    maintain.add_argument(
        "--retention-hours",
        type=int,
        help="keep files older versions need this long ([storage] retention_hours, default 168)",
    )

    view = sub.add_parser(
        "view", help="serve the neuron viewer over the Delta tables (read-only), or export it"
    )
    view.add_argument("--model", help="the model to open (default: the config's default)")
    view.add_argument("--host", default=VIEW_HOST, help="default: loopback only")
    view.add_argument("--port", type=int, default=VIEW_PORT)
    view.add_argument("--export", metavar="DIR", help="write a static copy to DIR instead")
    view.add_argument(
        "--layers", help="with --export: '0,5,29', '0-29' or 'all' (default: every layer run)"
    )
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
        elif args.command == "estimate":
            command_estimate(args, settings)
        elif args.command == "export" and args.format == "openai":
            command_export_openai(args, settings)
        elif args.command == "export":
            command_export_dataset(args, settings)
        elif args.command == "repair":
            command_repair(args, settings)
        elif args.command == "maintain":
            if args.retention_hours is not None and args.retention_hours < 0:
                raise InputError("--retention-hours must be at least 0")
            command_maintain(args, settings)

        elif args.command == "view":
            command_view(args, settings)
        elif args.command == "ui":
            command_ui(args)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        raise SystemExit(
            "autointerp: interrupted; a rerun resumes where this one stopped"
        ) from None
    except Exception as err:  # every failure is one line; the trace goes to a file
        home = settings.home if "settings" in locals() else Path.cwd()
        trace = keep_trace(err, home) if not isinstance(err, AutointerpError) else None
        where = f" (full trace in {trace})" if trace else ""
        raise SystemExit(f"autointerp: {one_line(err)}{where}") from None


if __name__ == "__main__":
    main()
