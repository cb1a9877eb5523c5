"""The code location as the configuration in effect says, built when loaded (not at import).

Runs on Dask load their job from here in every worker process: the worker reads
AUTOINTERP_CONFIG and AUTOINTERP_HOME as the process that launched the run set them.
"""

from __future__ import annotations

import dagster as dg

from autointerp.config.settings import load_settings
from pipelines.definitions import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_settings())
