"""LLM clients for the explainer and simulator profiles, sharing one persistent response cache."""

from pathlib import Path

import dagster as dg

from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.llm import LLMClient


class LLMClients(dg.ConfigurableResource):
    """Builds a client per LLM profile. API keys are read from the environment variable each
    profile names, at call time: they never pass through Dagster config or metadata."""

    cache_dir: str

    def client(self, profile: ExplainerProfile | SimulatorProfile) -> LLMClient | None:
        """None for an offline baseline or an imported profile, which call no LLM."""
        if profile.kind != "llm":
            return None
        return LLMClient(profile.endpoint(), cache_dir=Path(self.cache_dir))
