"""The subject models: loaded once per process, from configuration, never from a hub by default."""

import functools
from pathlib import Path

import dagster as dg

from autointerp.activations.subject_model import SubjectModel, load_subject_model
from autointerp.config.settings import ModelSpec


class SubjectModels(dg.ConfigurableResource):
    """Loads the subject models the assets explain (cached converted weights under `home`)."""

    home: str
    allow_hub: bool = False

    def load(self, spec: ModelSpec) -> SubjectModel:
        return _load(spec, self.home, self.allow_hub)


@functools.cache
def _load(spec: ModelSpec, home: str, allow_hub: bool) -> SubjectModel:
    # Loading takes seconds (minutes for a first GGUF conversion): every asset of a run shares one.
    return load_subject_model(
        spec,
        cache_dir=Path(home) / "models",
        downloads=Path(home) / "downloads",
        allow_hub=allow_hub,
    )
