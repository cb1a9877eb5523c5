"""What the code location holds: every declared subject model's asset graph, its resources, jobs,
checks and sensors.

Per model (asset keys under its prefix, e.g. `smollm2_135m/scores`):

- `<model>_graph`, a job over the whole graph. The `autointerp` CLI runs subsets of it, so its
  runs are named and tagged here like the UI's own and can be re-executed from the UI.
- `<model>_refresh`, the one action that brings the graph up to date after a profile change:
  it plans what is out of date (`pipelines.refresh`, the plan `autointerp refresh` follows) and
  runs exactly that, in dependency order, as runs of `<model>_graph` tagged with its run id.
- `<model>_maintenance`, which compacts and vacuums the tables (`autointerp maintain`).
- an `up_to_date` check on every asset, which the sensor `<model>_up_to_date` keeps current:
  after "Reload definitions" each out-of-date asset shows a failing (warning) check that names
  its layers and why, and the sensor's ticks say the same for the whole graph.

Beside the models, when configured: the activation study's assets (its training data, one
trained model per activation, their summary) and the comparison of models, with the job `study`
over them (`autointerp study` runs it, as the CLI runs the graph jobs).

A model whose weights are on the hub while the hub is off is not loaded: it cannot run here
(`autointerp run --model NAME` says why).
"""

from collections.abc import Sequence

import dagster as dg

from assets import model_assets
from assets.study import COMPARISON_GROUP, GROUP, study_assets
from autointerp.activations.subject_model import hub_refusal
from autointerp.config.settings import ModelSpec, Settings
from autointerp.safe_text import printable
from autointerp.storage.hashing import content_hash
from pipelines.maintenance import maintenance_job
from pipelines.refresh import Plan, describe, execute, plan_refresh
from pipelines.runs import (
    COMMAND_TAG,
    MODEL_TAG,
    REFRESH_RUN_TAG,
    STUDY_JOB,
    Materializer,
    graph_job_name,
    refresh_job_name,
)
from resources.delta_io import DeltaIOManager
from resources.llm import LLMClients
from resources.subject_models import SubjectModels

UP_TO_DATE = "up_to_date"
SENSOR_INTERVAL_S = 15


def resources(settings: Settings) -> dict[str, object]:
    return {
        "io_manager": DeltaIOManager(
            root_uri=settings.delta_root, storage_options=settings.storage.storage_options
        ),
        "subject_models": SubjectModels(home=str(settings.home), allow_hub=settings.allow_hub),
        "llm": LLMClients.from_settings(settings),
    }


def executor(settings: Settings) -> dg.ExecutorDefinition:
    """The executor of every job, from `[execution]`: Dagster's multiprocess (its default),
    in-process, or dagster-dask on an existing scheduler or a LocalCluster started per run."""
    spec = settings.execution
    if spec.executor == "in_process":
        return dg.in_process_executor
    if spec.executor == "multiprocess":
        return dg.multiprocess_executor
    from dagster_dask import dask_executor

    if spec.scheduler:
        cluster: dict = {"existing": {"address": spec.scheduler}}
    else:
        # Worker processes (never threads: Dagster steps are not thread-safe), each holding one
        # unit of the GPU resource that capture steps ask for; no dashboard, no fixed port.
        cluster = {
            "local": {
                "n_workers": spec.workers,
                "processes": True,
                "resources": {"GPU": 1},
                "dashboard_address": None,
            }
        }
    return dask_executor.configured({"cluster": cluster}, name="dask")


def runnable_models(settings: Settings) -> list[ModelSpec]:
    return [m for m in settings.models.values() if hub_refusal(m, settings.allow_hub) is None]


def verdict(plan: Plan, key: dg.AssetKey, model: ModelSpec) -> tuple[bool, str, dict]:
    """The up_to_date check of one asset under `plan`: passed, description, metadata."""
    due = plan.due.get(key)
    if not due:
        never = key in plan.never_materialized
        return True, "never materialized" if never else "in sync", {}
    layers = ", ".join(str(p) for p in due if p is not None)
    why = printable(describe(due), keep_lines=False)
    return (
        False,
        f"out of date: {why}. Launch the job {refresh_job_name(model)} to recompute it.",
        {"out_of_date_layers": layers or "all", "why": why, "refresh": refresh_job_name(model)},
    )


def model_definitions(settings: Settings, model: ModelSpec) -> tuple[list, list, list, list]:
    """One model's assets, checks, jobs and sensors."""
    assets = model_assets(settings, model)
    keys = sorted((key for a in assets for key in a.keys), key=lambda k: k.path)

    @dg.multi_asset_check(
        name=f"{model.key_prefix}__{UP_TO_DATE}",
        specs=[
            dg.AssetCheckSpec(
                UP_TO_DATE,
                asset=key,
                description=(
                    "Every materialized layer is in sync with the current profiles and its "
                    f"inputs; otherwise the job {refresh_job_name(model)} recomputes it."
                ),
            )
            for key in keys
        ],
        can_subset=True,
    )
    def up_to_date(context: dg.AssetCheckExecutionContext):
        plan = plan_refresh(context.instance, assets)
        for check in context.selected_asset_check_keys:
            passed, description, metadata = verdict(plan, check.asset_key, model)
            yield dg.AssetCheckResult(
                asset_key=check.asset_key,
                check_name=UP_TO_DATE,
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                description=description,
                metadata=metadata,
            )

    @dg.sensor(
        name=f"{model.key_prefix}_{UP_TO_DATE}",
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Keeps the up_to_date checks of {model.name}'s assets current (after a profile "
            f"change and Reload definitions, within {SENSOR_INTERVAL_S} s). Launches nothing: "
            f"the job {refresh_job_name(model)} recomputes what is out of date."
        ),
    )
    def keep_checks_current(context: dg.SensorEvaluationContext):
        plan = plan_refresh(context.instance, assets)
        due = [line for line in plan.lines() if line.startswith("out of date")]
        summary = printable("; ".join(due) or "every materialized layer is in sync")
        state = content_hash(
            sorted(
                [key.to_user_string(), sorted(due.items(), key=str)]
                for key, due in plan.due.items()
            ),
            sorted(key.to_user_string() for key in plan.never_materialized),
        )
        if state == context.cursor:
            return dg.SkipReason(summary)
        events = []
        for key in keys:
            passed, description, metadata = verdict(plan, key, model)
            events.append(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=UP_TO_DATE,
                    passed=passed,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=description,
                    metadata=metadata,
                )
            )
        return dg.SensorResult(asset_events=events, cursor=state, skip_reason=summary)

    @dg.op(
        name=f"{model.key_prefix}__refresh",
        description="Plan what is out of date and run exactly that, in dependency order.",
    )
    def refresh(context: dg.OpExecutionContext) -> None:
        materialize = Materializer(
            settings,
            model,
            "refresh",
            instance=context.instance,
            tags={REFRESH_RUN_TAG: context.run.run_id},
        )
        plan = plan_refresh(context.instance, materialize.assets)
        for line in plan.lines():
            context.log.info(line)
        if not plan.runs:
            context.log.info("nothing is out of date")
        execute(plan, materialize)

    refresh_job = dg.JobDefinition(
        name=refresh_job_name(model),
        graph_def=dg.GraphDefinition(
            name=f"{model.key_prefix}__refresh_graph", node_defs=[refresh]
        ),
        executor_def=dg.in_process_executor,
        tags={MODEL_TAG: model.name, COMMAND_TAG: "refresh"},
        description=(
            f"Bring {model.name}'s graph up to date: recompute exactly the layers of the assets "
            "that are out of date (their up_to_date check fails), in dependency order, and "
            "nothing else. The same plan as `autointerp refresh`."
        ),
    )
    graph_job = dg.define_asset_job(
        graph_job_name(model),
        selection=dg.AssetSelection.key_prefixes([model.key_prefix]),
        description=f"The whole graph of {model.name}: records, explanations, scores, revisions.",
    )
    jobs = [graph_job, refresh_job, maintenance_job(settings, model)]
    return assets, [up_to_date], jobs, [keep_checks_current]


def study_definitions(settings: Settings) -> tuple[list, list]:
    """The study's assets and the comparison of models, and the job over them (none without)."""
    assets = study_assets(settings)
    if not assets:
        return [], []
    job = dg.define_asset_job(
        STUDY_JOB,
        selection=dg.AssetSelection.groups(GROUP, COMPARISON_GROUP),
        tags={COMMAND_TAG: "study"},
        description=(
            "The activation study's training data, trained models and their summary, and the "
            "comparison of subject models."
        ),
    )
    return assets, [job]


def external_inputs(assets: Sequence[dg.AssetsDefinition]) -> list[dg.AssetSpec]:
    """What `assets` read that none of them writes (a compared model's tables, when its graph is
    not loaded here; a study model's training, beside its graph alone), as external assets."""
    written = {key for a in assets for key in a.keys}
    read = {dep for a in assets for deps in a.asset_deps.values() for dep in deps}
    return [dg.AssetSpec(key) for key in sorted(read - written, key=lambda k: k.path)]


def build_definitions(
    settings: Settings, models: Sequence[ModelSpec] | None = None, *, study: bool | None = None
) -> dg.Definitions:
    """The definitions of `models` (default: every model that can run in these settings), and
    with `study` (default: when no models are named) the study's and the comparison's."""
    chosen = runnable_models(settings) if models is None else models
    parts = [model_definitions(settings, m) for m in chosen]
    with_study = models is None if study is None else study
    extra_assets, extra_jobs = study_definitions(settings) if with_study else ([], [])
    assets = [a for part in parts for a in part[0]] + extra_assets
    return dg.Definitions(
        assets=assets + external_inputs(assets),
        asset_checks=[c for part in parts for c in part[1]],
        jobs=[j for part in parts for j in part[2]] + extra_jobs,
        sensors=[s for part in parts for s in part[3]],
        resources=resources(settings),
        executor=executor(settings),
    )
