"""The code location. `dagster dev -w workspace.yaml` loads `defs` (see pipelines/location.py for
what it holds); `make ui` starts it with DAGSTER_HOME under AUTOINTERP_HOME, so that runs launched
from the `autointerp` CLI appear in the UI and the reverse."""

from autointerp.config.settings import load_settings
from pipelines.location import build_definitions

defs = build_definitions(load_settings())
