"""An OpenAI-compatible endpoint and how to call it: model, URL, the NAME of the key's variable,
timeout, concurrency, retry policy and prices."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from autointerp.errors import ConfigError

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"  # local servers ignore the key, but the openai client insists on one
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def recorded_url(url: str) -> str:
    """A URL as it may be recorded: without user info (credentials) or query string."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible model endpoint and how to call it. Holds the NAME of the key's variable.

    `base_url` None is OpenAI; a local vLLM / llama.cpp / Ollama server is e.g.
    "http://127.0.0.1:8000/v1" with `api_key_env=None` (it needs no key). Only `base_url` and
    `model` enter the cache key; timeouts, retries, concurrency and prices do not.
    """

    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 60.0  # per attempt
    max_concurrency: int = 10
    max_attempts: int = 10
    backoff_base_s: float = 1.0  # first retry waits this, doubling each time
    backoff_cap_s: float = 10.0
    backoff_jitter: float = 0.2  # ±20%: spreads retries of calls that failed together
    prompt_price_per_m: float | None = None  # USD per 1M prompt tokens
    completion_price_per_m: float | None = None  # USD per 1M completion tokens

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("an LLM endpoint needs a model name")
        if self.timeout_s <= 0 or self.max_concurrency < 1 or self.max_attempts < 1:
            raise ConfigError(
                f"endpoint {self.model!r}: timeout_s must be > 0, max_concurrency and "
                "max_attempts >= 1"
            )
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0 or not 0 <= self.backoff_jitter < 1:
            raise ConfigError(
                f"endpoint {self.model!r}: backoff times must be >= 0 and jitter in [0, 1)"
            )
        if self.api_key_env is not None and not _VARIABLE_NAME.fullmatch(self.api_key_env):
            # The value is not repeated: it may be the key itself, pasted in the wrong place.
            raise ConfigError(
                f"endpoint {self.model!r}: api_key_env must be the NAME of an environment "
                "variable (letters, digits and underscores, e.g. OPENAI_API_KEY), not the key; "
                "the value given is not shown"
            )

    def __repr__(self) -> str:  # the URL may carry credentials: shown without them
        return f"Endpoint(model={self.model!r}, url={self.shown!r})"

    @property
    def url(self) -> str:
        """Where requests go (credentials in the URL included: never record it; see `shown`)."""
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    @property
    def shown(self) -> str:
        """The endpoint's URL as tables, logs and errors show it."""
        return recorded_url(self.url)

    @property
    def priced(self) -> bool:
        return self.prompt_price_per_m is not None and self.completion_price_per_m is not None

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        """USD for a call of these token counts; None without prices or counts."""
        if not self.priced or prompt_tokens is None or completion_tokens is None:
            return None
        return (
            prompt_tokens * self.prompt_price_per_m
            + completion_tokens * self.completion_price_per_m
        ) / 1e6

    def api_key(self) -> str:
        """The key, read from the environment now; never stored on the endpoint."""
        if self.api_key_env is None:
            return NO_KEY
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"no API key for {self.shown}: set the environment variable {self.api_key_env}, "
                "or set api_key_env to None for a local server that needs no key"
            )
        return key
