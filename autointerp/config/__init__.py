"""Configuration: settings from `autointerp.toml` and the environment (`settings`), explainer and
simulator profiles (`profiles`), and what of them versions results (`versioning`)."""

from autointerp.config.settings import (
    DEFAULT_CONFIG,
    PROJECT_ROOT,
    CorpusSpec,
    ModelSpec,
    RecordsSpec,
    RevisionSpec,
    Settings,
    load_settings,
    prepare_home,
)

__all__ = [
    "DEFAULT_CONFIG",
    "PROJECT_ROOT",
    "CorpusSpec",
    "ModelSpec",
    "RecordsSpec",
    "RevisionSpec",
    "Settings",
    "load_settings",
    "prepare_home",
]
