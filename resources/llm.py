"""LLM clients for the explainer and simulator profiles, sharing one persistent response cache:
SQLite under AUTOINTERP_HOME, or objects under the Delta root that every worker reaches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from autointerp.config.profiles import ExplainerProfile, SimulatorProfile
from autointerp.config.settings import Settings
from autointerp.llm import LLMClient, SharedResponseCache


class LLMClients(dg.ConfigurableResource):
    """Builds a client per LLM profile. API keys are read from the environment variable each
    profile names, at call time: they never pass through Dagster config or metadata.

    `cache_dir`: the local cache's folder; with `shared_cache` (a folder or object-store URI),
    responses live there instead and `cache_dir` only keeps what could not be written."""

    cache_dir: str
    shared_cache: str | None = None
    storage_options: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMClients:
        return cls(
            cache_dir=str(settings.llm_cache),
            shared_cache=settings.shared_llm_cache,
            storage_options=settings.storage.storage_options,
        )

    def client(
        self,
        profile: ExplainerProfile | SimulatorProfile,
        report: Callable[[str], None] | None = None,
    ) -> LLMClient | None:
        """None for an offline baseline or an imported profile, which call no LLM. `report`:
        where each batch of calls logs its progress (see LLMClient)."""
        if profile.kind != "llm":
            return None
        if self.shared_cache is None:
            return LLMClient(profile.endpoint(), cache_dir=Path(self.cache_dir), report=report)
        cache = SharedResponseCache(
            self.shared_cache, self.storage_options, spill_folder=self.cache_dir
        )
        return LLMClient(profile.endpoint(), cache=cache, report=report)
