"""Subject models, loaded when a step needs one: from configuration, never from a hub by default."""

import functools
from pathlib import Path

import dagster as dg

from autointerp.activations.subject_model import SubjectModel, load_subject_model
from autointerp.config.settings import ModelSpec
from autointerp.heap import return_freed_memory


class SubjectModels(dg.ConfigurableResource):
    """Loads the subject models the assets explain (cached converted weights under `home`)."""

    home: str
    allow_hub: bool = False

    def load(
        self, spec: ModelSpec, through_layer: int | None = None, from_layer: int = 0
    ) -> SubjectModel:
        """`spec`'s model, built through `through_layer` only when given (the deepest layer
        the step reads), without the blocks below `from_layer`: see `load_subject_model`."""
        return _load(spec, self.home, self.allow_hub, through_layer, from_layer)

    def release(self) -> None:
        """Forget every loaded model (see `release`)."""
        release()


@functools.cache
def _load(
    spec: ModelSpec, home: str, allow_hub: bool, through_layer: int | None, from_layer: int
) -> SubjectModel:
    # Loading takes seconds (minutes for a first GGUF conversion): every asset of a run shares one.
    # The CLI drops it between runs (`release`): most runs never need it.
    return load_subject_model(
        spec,
        cache_dir=Path(home) / "models",
        downloads=Path(home) / "downloads",
        allow_hub=allow_hub,
        through_layer=through_layer,
        from_layer=from_layer,
    )


def release() -> None:
    """Forget every loaded model, so that a process running one run after another holds a model
    (hundreds of MB) only during the runs that use it; the next one to need it loads it again
    from the converted folder in about a second. What the step freed with it goes back to the
    system: the step's write that follows peaks at several times what it writes."""
    _load.cache_clear()
    return_freed_memory()
