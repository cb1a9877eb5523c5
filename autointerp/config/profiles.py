"""Explainer and simulator profiles: named, hashed configurations of who explains and who simulates.

A profile is a section of the configuration (`[explainers.NAME]`, `[simulators.NAME]`); the
`[pipeline]` section says which ones run. The two offline baselines are always defined, so a
configuration without these sections runs them:

    [pipeline]
    explainers = ["token-statistics-baseline"]
    simulators = ["lexical-baseline"]
    max_error_fraction = 0.2

    [explainers.gpt-4o-mini]
    kind = "llm"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"   # the NAME of the variable holding the key, never the key

`profile.hash` covers everything that changes what a profile writes (model, endpoint, prompt
version, the few-shot set's content, sampling parameters, neuron sample) and nothing that only
changes how it is fetched (concurrency, timeout, prices, the key's variable), so editing a few-shot
set marks dependent assets unsynced while raising the concurrency does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from autointerp.activations.sampling import is_sample_spec
from autointerp.config.validation import Rule, above, at_least, between, build, matches, one_of
from autointerp.config.versioning import Versioned
from autointerp.errors import AutointerpError, ConfigError, InputError
from autointerp.explain.baseline import BASELINE_VERSION, TOKEN_STATISTICS_EXPLAINER
from autointerp.explain.explainer_prompt import EXPLAINER_PROMPT_VERSION, TOKEN_LIST_PROMPT_VERSION
from autointerp.explain.few_shot import few_shot_hash
from autointerp.llm.endpoint import Endpoint
from autointerp.simulate.baseline import LEXICAL_SIMULATOR, LexicalWeights
from autointerp.simulate.simulator_prompt import (
    ALL_AT_ONCE,
    CHAT_LOGPROBS,
    PLAIN_TEXT,
    SIMULATOR_PROMPT_VERSION,
)
from autointerp.storage.hashing import content_hash

KINDS = ("baseline", "llm")  # what a configuration declares
# The profiles of an imported dataset (`imported_profiles`): declared by the model, never here.
IMPORTED = "imported"
IMPORTED_PREFIX = "imported:"
IMPORT_VERSION = "openai-format-1"
LLM_SIMULATOR_METHODS = (CHAT_LOGPROBS, ALL_AT_ONCE, PLAIN_TEXT)
SIMULATOR_METHODS = (*LLM_SIMULATOR_METHODS, LEXICAL_SIMULATOR)
# A paid run over every neuron of a model is a deliberate choice, so LLM explainers start small.
LLM_NEURON_SAMPLE = "first:50"
DEFAULT_MAX_ERROR_FRACTION = 0.2
# Fields that change how calls are made, not what comes back: left out of the hash.
_OPERATIONAL = frozenset(
    {
        "name",
        "api_key_env",
        "max_concurrency",
        "timeout_s",
        "max_attempts",
        "backoff_base_s",
        "backoff_cap_s",
        "prompt_price_per_m",
        "completion_price_per_m",
    }
)
_LEXICAL_WEIGHTS = frozenset(
    {"quoted_weight", "quoted_stem_weight", "word_weight", "context_weight"}
)
# The checks every LLM endpoint's settings share (see config.validation).
_ENDPOINT_RULES: dict[str, Rule] = {
    "api_key_env": matches(
        r"[A-Za-z_][A-Za-z0-9_]*",
        "the NAME of an environment variable (letters, digits, underscores), never the key",
    ),
    "max_concurrency": at_least(1, "a whole number"),
    "timeout_s": above(0),
    "max_attempts": at_least(1, "a whole number"),
    "backoff_base_s": at_least(0),
    "backoff_cap_s": at_least(0),
    "prompt_price_per_m": at_least(0),
    "completion_price_per_m": at_least(0),
}
# Keys a baseline profile takes; anything else (a model, a prompt) means kind = "llm" was meant.
_BASELINE_KEYS = {
    "explainer": frozenset({"kind", "neuron_sample", "max_cues"}),
    "simulator": frozenset({"kind", "method", "calibration"}) | _LEXICAL_WEIGHTS,
}


def _endpoint(profile: ExplainerProfile | SimulatorProfile) -> Endpoint:
    if profile.kind != "llm" or profile.model is None:
        raise ConfigError(f"{profile.name!r} is a baseline profile: it calls no endpoint")
    try:
        return Endpoint(
            model=profile.model,
            base_url=profile.base_url,
            api_key_env=profile.api_key_env,
            timeout_s=profile.timeout_s,
            max_concurrency=profile.max_concurrency,
            max_attempts=profile.max_attempts,
            backoff_base_s=profile.backoff_base_s,
            backoff_cap_s=profile.backoff_cap_s,
            prompt_price_per_m=profile.prompt_price_per_m,
            completion_price_per_m=profile.completion_price_per_m,
        )
    except AutointerpError as err:
        raise ConfigError(f"profile {profile.name!r}: {err}") from None


def _content(profile: ExplainerProfile | SimulatorProfile, role: str) -> dict[str, Any]:
    """What a profile's output depends on: for a baseline only the keys it takes (so changing an
    LLM default leaves baseline hashes alone); for an LLM every non-operational field, with the
    few-shot set by content, so editing the set changes the hash."""
    content = profile.hash_content()
    if profile.kind == IMPORTED:
        return {"kind": IMPORTED, "version": IMPORT_VERSION, "source": profile.source}
    if profile.kind == "baseline":
        baseline = _BASELINE_KEYS[role] - {"kind"}
        return {"kind": "baseline", "version": BASELINE_VERSION} | {
            key: value for key, value in content.items() if key in baseline
        }
    return content | {"few_shot_hash": few_shot_hash(profile.few_shot)}


@dataclass(frozen=True)
class ExplainerProfile(Versioned):
    """Who writes explanations: the token-statistics baseline, or an LLM behind an
    OpenAI-compatible endpoint with a prompt version, few-shot set and sampling parameters."""

    name: str
    kind: str  # baseline | llm
    model: str | None = None
    base_url: str | None = None  # None: OpenAI
    api_key_env: str | None = None  # None: the endpoint needs no key (a local server)
    prompt: str = EXPLAINER_PROMPT_VERSION  # reference-v1 | token-list-v1
    few_shot: str = "default"
    n: int = 5
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 60
    max_prompt_tokens: int | None = None  # None: no budget, nothing is dropped
    max_concurrency: int = 10
    timeout_s: float = 60.0
    max_attempts: int = 10  # HTTP attempts per call; retries back off exponentially
    backoff_base_s: float = 1.0  # the first retry's wait, doubling each time
    backoff_cap_s: float = 10.0  # the longest wait between attempts
    prompt_price_per_m: float | None = None  # USD per 1M tokens
    completion_price_per_m: float | None = None
    neuron_sample: str = "all"
    max_cues: int = 5  # the baseline: how many tokens or contexts an explanation names
    source: str | None = None  # an imported profile: the dataset its explanations come from

    OPERATIONAL = _OPERATIONAL
    SINCE_DEFAULT = frozenset({"source"})
    RULES: ClassVar[Mapping[str, Rule]] = {
        **_ENDPOINT_RULES,
        "prompt": one_of(EXPLAINER_PROMPT_VERSION, TOKEN_LIST_PROMPT_VERSION),
        "n": at_least(1, "a whole number"),
        "temperature": between(0, 2),
        "top_p": ((lambda v: 0 < v <= 1), "a number above 0, at most 1"),
        "max_tokens": at_least(1, "a whole number"),
        "max_prompt_tokens": at_least(1, "a whole number (or unset: no budget)"),
        "neuron_sample": (is_sample_spec, "all, first:N or random:N:SEED"),
        "max_cues": at_least(1, "a whole number"),
    }

    @property
    def hash(self) -> str:
        return content_hash("explainer", self.hashed_content())

    def hashed_content(self) -> dict[str, Any]:
        """What the hash covers. `prompt` is the prompt's version string, so it is part of it."""
        return _content(self, "explainer")

    def endpoint(self) -> Endpoint:
        return _endpoint(self)


@dataclass(frozen=True)
class SimulatorProfile(Versioned):
    """Who predicts activations from an explanation: the lexical baseline, or an LLM by one of
    the methods of `autointerp.simulate` (chat-logprobs, all-at-once, plain-text).

    `calibration`: fit a linear map from the simulator's 0–10 scale to the neuron's own on the
    calibration split before scoring valid and test (it changes rsquared and absolute deviation
    explained, not correlation up to its sign)."""

    name: str
    kind: str  # baseline | llm
    method: str = LEXICAL_SIMULATOR
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    few_shot: str = "default"
    max_concurrency: int = 10
    timeout_s: float = 60.0
    max_attempts: int = 10
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 10.0
    prompt_price_per_m: float | None = None
    completion_price_per_m: float | None = None
    calibration: bool = False
    # A reply leaving more than this share of an excerpt's tokens unanswered is an error row.
    max_missing_share: float = 0.25
    # The lexical baseline's weights (0–10 scale); see autointerp.simulate.baseline.
    quoted_weight: float = LexicalWeights.quoted
    quoted_stem_weight: float = LexicalWeights.quoted_stem
    word_weight: float = LexicalWeights.word
    context_weight: float = LexicalWeights.context
    source: str | None = None  # an imported profile: the dataset its simulations come from

    OPERATIONAL = _OPERATIONAL
    SINCE_DEFAULT = _LEXICAL_WEIGHTS | {"source"}
    RULES: ClassVar[Mapping[str, Rule]] = {
        **_ENDPOINT_RULES,
        "max_missing_share": between(0, 1),
        **{weight: between(0, 10) for weight in _LEXICAL_WEIGHTS},
    }

    @property
    def hash(self) -> str:
        return content_hash("simulator", self.hashed_content())

    def hashed_content(self) -> dict[str, Any]:
        """What the hash covers."""
        content = _content(self, "simulator")
        if self.kind == "llm":
            content["prompt_version"] = SIMULATOR_PROMPT_VERSION
        return content

    def endpoint(self) -> Endpoint:
        return _endpoint(self)

    def lexical_weights(self) -> LexicalWeights:
        return LexicalWeights(
            quoted=self.quoted_weight,
            quoted_stem=self.quoted_stem_weight,
            word=self.word_weight,
            context=self.context_weight,
        )


@dataclass(frozen=True)
class Profiles:
    """Every declared profile, and which of them a run uses."""

    explainers: dict[str, ExplainerProfile]
    simulators: dict[str, SimulatorProfile]
    active_explainers: list[str] = field(default_factory=lambda: [TOKEN_STATISTICS_EXPLAINER])
    active_simulators: list[str] = field(default_factory=lambda: [LEXICAL_SIMULATOR])
    max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION

    def explainer(self, name: str) -> ExplainerProfile:
        return _lookup(self.explainers, name, "explainer")

    def simulator(self, name: str) -> SimulatorProfile:
        return _lookup(self.simulators, name, "simulator")


def _lookup(profiles: dict, name: str, role: str) -> Any:
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"unknown {role} profile {name!r}; declared {role}s: {known}")
    return profiles[name]


BUILTIN_EXPLAINERS = {
    TOKEN_STATISTICS_EXPLAINER: ExplainerProfile(TOKEN_STATISTICS_EXPLAINER, kind="baseline")
}
BUILTIN_SIMULATORS = {LEXICAL_SIMULATOR: SimulatorProfile(LEXICAL_SIMULATOR, kind="baseline")}


def _build(cls: type, role: str, name: str, raw: Any, defaults: dict[str, Any]) -> Any:
    """A profile from its section: keys known, types right, baselines free of LLM settings."""
    if not isinstance(raw, dict):
        raise ConfigError(f"[{role}s.{name}] must be a table of settings, not {raw!r}")
    if "api_key" in raw:
        raise ConfigError(
            f"{role} {name!r}: never write an API key into the configuration; put it in an "
            "environment variable and name that variable in api_key_env"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{role} {name!r}: kind must be one of {KINDS}, not {kind!r}")
    if kind == "baseline" and (extra := set(raw) - _BASELINE_KEYS[role]):
        raise ConfigError(
            f"{role} {name!r} is a baseline and takes only {sorted(_BASELINE_KEYS[role])}; "
            f'{sorted(extra)} belong to kind = "llm"'
        )
    # `source` belongs to imported profiles, which a model declaration makes.
    fixed = {"name": name, "source": None}
    profile = build(cls, f"{role}s.{name}", raw, fixed=fixed, defaults=defaults)
    if kind == "llm":
        if not profile.model:
            raise ConfigError(f"{role} {name!r}: an llm profile needs a model")
        if profile.base_url is None and profile.api_key_env is None:
            raise ConfigError(
                f"{role} {name!r} calls OpenAI (no base_url): set api_key_env to the name of the "
                "environment variable holding the key"
            )
        try:
            few_shot_hash(profile.few_shot)
        except InputError as err:
            raise ConfigError(f"{role} {name!r}: {err}") from None
        profile.endpoint()  # checks concurrency, timeout and prices now, not mid-run
    return profile


def explainer_profile(name: str, raw: Any) -> ExplainerProfile:
    """One `[explainers.NAME]` section, checked."""
    llm = isinstance(raw, dict) and raw.get("kind") == "llm"
    defaults = {"neuron_sample": LLM_NEURON_SAMPLE if llm else "all"}
    return _build(ExplainerProfile, "explainer", name, raw, defaults)


def simulator_profile(name: str, raw: Any) -> SimulatorProfile:
    """One `[simulators.NAME]` section, checked. Methods may be written with `_` or `-`."""
    profile = _build(SimulatorProfile, "simulator", name, raw, {})
    method = profile.method.replace("_", "-")
    allowed = (LEXICAL_SIMULATOR,) if profile.kind == "baseline" else LLM_SIMULATOR_METHODS
    if method not in allowed:
        raise ConfigError(
            f"simulator {name!r} of kind {profile.kind!r}: method must be one of {allowed}, not "
            f"{raw.get('method')!r}"
        )
    return dataclasses.replace(profile, method=method)


def imported_profiles(model: str, source: str) -> tuple[ExplainerProfile, SimulatorProfile]:
    """The explainer and simulator profiles of a model imported from `source` (ModelSpec
    `openai_dataset`): both named `imported:<model>`. The explainer's rows are the dataset's
    explanations (never written by an LLM here); the simulator's are the dataset's scored
    simulations of them, with the scores as stored."""
    name = IMPORTED_PREFIX + model
    return (
        ExplainerProfile(name, kind=IMPORTED, source=source),
        SimulatorProfile(name, kind=IMPORTED, method=IMPORTED, source=source),
    )


def _names(raw: Any, key: str, default: list[str], declared: dict) -> list[str]:
    names = raw.get(key, default)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"[pipeline] {key} must be a list of profile names, not {names!r}")
    role = key.removesuffix("s")
    for name in names:
        _lookup(declared, name, role)
    return list(names)


def load_profiles(raw: dict[str, Any]) -> Profiles:
    """The profiles of a parsed configuration file (the whole TOML document as a dict)."""
    sections = {}
    for key in ("explainers", "simulators", "pipeline"):
        section = raw.get(key, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{key}] must be a table")
        sections[key] = section
    explainers = dict(BUILTIN_EXPLAINERS)
    explainers |= {n: explainer_profile(n, s) for n, s in sections["explainers"].items()}
    simulators = dict(BUILTIN_SIMULATORS)
    simulators |= {n: simulator_profile(n, s) for n, s in sections["simulators"].items()}
    pipeline = sections["pipeline"]
    if unknown := set(pipeline) - {"explainers", "simulators", "max_error_fraction"}:
        raise ConfigError(f"[pipeline]: unknown keys {sorted(unknown)}")
    fraction = pipeline.get("max_error_fraction", DEFAULT_MAX_ERROR_FRACTION)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        raise ConfigError(f"[pipeline] max_error_fraction must be in [0, 1], not {fraction!r}")
    return Profiles(
        explainers=explainers,
        simulators=simulators,
        active_explainers=_names(pipeline, "explainers", [TOKEN_STATISTICS_EXPLAINER], explainers),
        active_simulators=_names(pipeline, "simulators", [LEXICAL_SIMULATOR], simulators),
        max_error_fraction=float(fraction),
    )
