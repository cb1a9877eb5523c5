"""Maintenance of a model's tables (compaction and vacuum, `autointerp.storage.maintenance`): the
Dagster job, and what `autointerp maintain` shares with it."""

import dagster as dg

from assets import model_assets
from autointerp.config.settings import ModelSpec, Settings
from autointerp.safe_text import printable
from autointerp.storage.maintenance import TableMaintenance, maintain_root


def model_tables(settings: Settings, model: ModelSpec) -> list[str]:
    """The tables of the model's asset graph, by name."""
    return sorted({key.path[-1] for asset in model_assets(settings, model) for key in asset.keys})


def maintain_model(
    settings: Settings, model: ModelSpec, retention_hours: int | None = None
) -> list[TableMaintenance]:
    return maintain_root(
        settings.model_root(model),
        model_tables(settings, model),
        retention_hours=(
            settings.storage.retention_hours if retention_hours is None else retention_hours
        ),
        storage_options=settings.storage.storage_options,
    )


def maintenance_job_name(model: ModelSpec) -> str:
    return f"{model.key_prefix}_maintenance"


class MaintenanceConfig(dg.Config):
    # Files older versions need are kept this long (None: [storage] retention_hours); the
    # versions lineage of current rows reads are kept whatever it is.
    retention_hours: int | None = None


def maintenance_job(settings: Settings, model: ModelSpec) -> dg.JobDefinition:
    @dg.op(name=f"{model.key_prefix}_maintain_tables")
    def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig) -> None:
        reports = maintain_model(settings, model, config.retention_hours)
        for report in reports:
            context.log.info(printable(report.line(), keep_lines=False))
        context.add_output_metadata(
            {
                "files_before": sum(r.files_before for r in reports),
                "files_after": sum(r.files_after for r in reports),
                "deleted_files": sum(r.deleted_files for r in reports),
            }
        )

    @dg.job(
        name=maintenance_job_name(model),
        description=f"Compact and vacuum the tables of {model.name}, keeping what lineage reads.",
    )
    def job() -> None:
        maintain_tables()

    return job
