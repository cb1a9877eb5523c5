"""Runs of a model's graph in this process, through the code location's own `<model>_graph` job
(or of the study's assets, through its `study` job): each run is named and tagged (model, layers,
command), appears in the UI's runs and timeline beside those launched there, and can be
re-executed from it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
from filelock import FileLock

from assets.neuron_records import CAPTURE_RANGE_END_TAG
from autointerp.config.settings import ModelSpec, Settings
from autointerp.errors import AutointerpError
from autointerp.safe_text import printable
from pipelines.console import quiet_tracebacks
from pipelines.run_plan import layer_runs
from resources.subject_models import release as release_subject_models

# Dagster's step events at DEBUG drown the progress lines; the UI keeps them all.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

MODEL_TAG = "autointerp/model"
LAYERS_TAG = "autointerp/layers"
COMMAND_TAG = "autointerp/command"
# On the runs a refresh launched from the UI made: the id of that refresh run.
REFRESH_RUN_TAG = "autointerp/refresh_run"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# The job over the activation study's assets and the comparison of models.
STUDY_JOB = "study"


class RunFailed(AutointerpError):
    """A run of the graph failed; the message names the run and the root causes."""


def graph_job_name(model: ModelSpec) -> str:
    return f"{model.key_prefix}_graph"


def refresh_job_name(model: ModelSpec) -> str:
    return f"{model.key_prefix}_refresh"


def run_tags(
    model: ModelSpec | None, command: str, partitions: tuple[str, str] | None = None
) -> dict:
    tags = {COMMAND_TAG: command, **({MODEL_TAG: model.name} if model else {})}
    if partitions:
        low, high = partitions
        tags[LAYERS_TAG] = low if low == high else f"{low}-{high}"
        tags[RANGE_START_TAG], tags[RANGE_END_TAG] = low, high
    return tags


class Materializer:
    """Runs materializations of one model's graph (`model` None: of the study's assets and the
    comparison of models) in `instance` (default: DAGSTER_HOME's). With `log_home` (a
    terminal's runs), Dagster's tracebacks go to the run log under it, and each error prints in
    one line."""

    def __init__(
        self,
        settings: Settings,
        model: ModelSpec | None,
        command: str,
        *,
        instance: dg.DagsterInstance | None = None,
        tags: Mapping[str, str] | None = None,
        log_home: Path | None = None,
    ) -> None:
        from pipelines.location import build_definitions

        self.settings, self.model, self.command = settings, model, command
        if model is None:
            definitions = build_definitions(settings, models=[], study=True)
            self.job = definitions.resolve_job_def(STUDY_JOB)
        else:
            definitions = build_definitions(settings, models=[model])
            self.job = definitions.resolve_job_def(graph_job_name(model))
        self.assets = [a for a in definitions.assets if isinstance(a, dg.AssetsDefinition)]
        self.instance = instance or shared_instance()
        self.extra_tags = dict(tags or {})
        self.log_home = log_home

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([self.model.key_prefix, name])

    def __call__(
        self,
        keys: list[dg.AssetKey],
        partitions: tuple[str, str] | None = None,
        config: dict | None = None,
    ) -> str:
        """Materialize `keys` (over one range of layers), print each run's id, return the last.
        In this process the range runs one layer per run but for its one-pass steps (runs of
        `capture_layers_per_run` layers), so that memory stays flat in the layers
        (`pipelines.run_plan`); Dask workers are processes of their own, and there the range is
        one run."""
        if partitions is None or self.settings.execution.executor == "dask":
            return self._run(keys, partitions, config)
        by_name = {key.path[-1]: key for key in keys}
        order = [str(layer) for layer in self.model.layers]
        per_run = self.settings.execution.capture_layers_per_run
        # A capture run short of the range's end leaves the residual stream to the next.
        range_end = {CAPTURE_RANGE_END_TAG: partitions[1]}
        for names, layers in layer_runs(list(by_name), partitions, order, per_run):
            run_id = self._run([by_name[name] for name in names], layers, config, range_end)
        return run_id

    def _run(
        self,
        keys: list[dg.AssetKey],
        partitions: tuple[str, str] | None,
        config: dict | None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        model = self.model
        if config is None and model and not model.imported and self.key("corpus") in keys:
            # A corpus rebuilt by a refresh keeps the sample size it last had (an imported
            # model's comes with its records and takes no sample size).
            config = self.corpus_config(self.last_corpus_size())
        quiet = quiet_tracebacks(self.log_home) if self.log_home else contextlib.nullcontext()
        run_config = {**QUIET_LOGS, **(config or {})}
        tags = {**run_tags(self.model, self.command, partitions), **(tags or {}), **self.extra_tags}
        with quiet as log:
            if self.settings.execution.executor == "dask":
                result = dg.execute_job(
                    self.reconstructable_job(),
                    instance=self.instance,
                    asset_selection=keys,
                    run_config=run_config,
                    tags=tags,
                    raise_on_error=False,
                )
            else:
                result = execute_in_process(
                    self.job, run_config=run_config, instance=self.instance, keys=keys, tags=tags
                )
        # The next run may not need the model, nor what this one freed.
        release_subject_models()
        if not result.success:
            errors = [
                _root_cause(event.step_failure_data.error)
                for event in result.get_step_failure_events()
                if event.step_failure_data.error
            ]
            where = f"full trace in {log}, and" if log else "full trace"
            raise RunFailed(
                f"run {result.run_id} failed: {'; '.join(errors)} ({where} on the run's page "
                "in the UI)"
            )
        names = ", ".join(key.path[-1] for key in keys)
        where = ""
        if partitions:
            low, high = partitions
            where = f" layer {low}" if low == high else f" layers {low}-{high}"
        print(f"run {result.run_id}: materialized {names}{where}", file=sys.stderr)
        # Rows that failed (within max_error_fraction) are said, never dropped in silence.
        written = (
            event.event_specific_data.materialization
            for event in result.get_asset_materialization_events()
        )
        errors = {m.asset_key.path[-1]: m.metadata.get("errors") for m in written}
        counts = {name: value.value for name, value in errors.items() if value is not None}
        for line in failed_rows(counts, where):
            print(line, file=sys.stderr)
        return result.run_id

    def reconstructable_job(self):
        """The model's job as Dask workers load it: from the code location's module, which
        reads the same configuration (AUTOINTERP_CONFIG, AUTOINTERP_HOME) in every worker."""
        from dagster._core.definitions.reconstruct import ReconstructableRepository

        repository = ReconstructableRepository.for_module(
            "pipelines.current_definitions", "defs", working_directory=os.getcwd()
        )
        return repository.get_reconstructable_job(self.job.name)

    def corpus_config(self, max_excerpts: int | None) -> dict:
        op = f"{self.model.key_prefix}__corpus"
        return {"ops": {op: {"config": {"max_excerpts": max_excerpts}}}}

    def last_corpus_size(self) -> int | None:
        event = self.instance.get_latest_materialization_event(self.key("corpus"))
        if event is None or event.asset_materialization is None:
            return None
        value = event.asset_materialization.metadata.get("max_excerpts")
        return value.value if value is not None and isinstance(value.value, int) else None


def execute_in_process(
    job: dg.JobDefinition,
    *,
    run_config: Mapping,
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    tags: Mapping[str, str],
) -> dg.ExecuteInProcessResult:
    """`job.execute_in_process(...)` (raise_on_error=False), without keeping every step's output
    in memory until the run ends: Dagster's in-process result holds each output value (here
    whole tables, which are in Delta already) and dagster 1.13 has no public switch for it, so
    this makes the same call with `output_capturing_enabled=False`. Holding them kept every
    table a layer's run wrote in memory to its end: up to 0.4 GB for a layer of SmolLM2."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.execute_in_process import (
        core_execute_in_process,
        merge_run_tags,
    )

    ephemeral = job.as_ephemeral_job(resource_defs={}, input_values={}, asset_selection=keys)
    return core_execute_in_process(
        run_config=run_config,
        job=InMemoryJob(job_def=ephemeral),
        instance=instance,
        output_capturing_enabled=False,
        raise_on_error=False,
        run_tags=merge_run_tags(
            job_def=job,
            partition_key=None,
            tags=tags,
            asset_selection=keys,
            instance=instance,
            run_config=run_config,
        ),
        asset_selection=frozenset(keys),
    )


def shared_instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance. Processes opening it for the first time at once (two runs started
    together on a fresh home) would each create its SQLite tables, and all but one would fail:
    the first to take the lock creates them."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.get()  # Dagster's own error, or its ephemeral instance
    Path(home).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(home) / ".instance.lock")):
        return dg.DagsterInstance.get()


def failed_rows(errors: dict[str, int], where: str = "") -> list[str]:
    """A warning per table whose `errors` metadata counts failed rows."""
    return [
        f"autointerp: warning: {count} rows of {name}{where} failed (their error column says "
        "why; score_summary's dropped and dropped_why count the neurons left out)"
        for name, count in errors.items()
        if count
    ]


def _root_cause(error) -> str:
    """The user's error inside Dagster's wrapping (a SerializableErrorInfo chain), in one line."""
    while error.cause is not None and (error.cls_name or "").startswith("Dagster"):
        error = error.cause
    lines = error.message.strip().splitlines()
    return printable(lines[0] if lines else error.cls_name or "error", keep_lines=False)
