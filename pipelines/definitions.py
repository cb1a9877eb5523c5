"""The code location: every declared subject model's asset graph, its resources and jobs.

`dagster dev -w workspace.yaml` loads `defs`; `make ui` starts it with DAGSTER_HOME under
AUTOINTERP_HOME so that runs launched from the `autointerp` CLI appear in the UI and the reverse.
"""

from __future__ import annotations

import dagster as dg

from assets import all_assets
from assets.study import GROUP
from autointerp.config.settings import ModelSpec, Settings, load_settings
from pipelines.maintenance import maintenance_job
from resources.delta_io import DeltaIOManager
from resources.llm import LLMClients
from resources.subject_models import SubjectModels


def resources(settings: Settings) -> dict[str, object]:
    return {
        "io_manager": DeltaIOManager(
            root_uri=settings.delta_root, storage_options=settings.storage.storage_options
        ),
        "subject_models": SubjectModels(home=str(settings.home), allow_hub=settings.allow_hub),
        "llm": LLMClients.from_settings(settings),
    }


def records_job_name(model: ModelSpec) -> str:
    return f"{model.key_prefix}_records"


def build_definitions(settings: Settings) -> dg.Definitions:
    assets = all_assets(settings)
    jobs = [
        dg.define_asset_job(
            records_job_name(model),
            selection=dg.AssetSelection.groups(model.key_prefix),
            description=f"The whole graph of {model.name}: records, explanations, scores.",
        )
        for model in settings.models.values()
    ] + [maintenance_job(settings, model) for model in settings.models.values()]
    if settings.study is not None:
        jobs.append(
            dg.define_asset_job(
                "study_training",
                selection=dg.AssetSelection.groups(GROUP),
                description="The activation study's training data, models and their summary.",
            )
        )
    return dg.Definitions(assets=assets, jobs=jobs, resources=resources(settings))


defs = build_definitions(load_settings())
