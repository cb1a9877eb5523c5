"""The activation study: training data, one trained model per activation, the training summary,
and the comparison of subject models (comparison/across_models).

study/training_data ─▶ study/model_<activation> ─▶ study/training_summary
                                 │
                                 └─▶ study_<activation>/corpus, neuron_records … scores
                                                               │
comparison/across_models ◀──────── scores, neuron_records ◀────┘  (of each compared model)
"""

from collections.abc import Mapping

import dagster as dg
import polars as pl

from assets.common import blocking_check, gpu_step, summary_version, table_output, validated
from autointerp.activations.corpus_sources import iter_documents
from autointerp.config.settings import Settings, StudySpec
from autointerp.progress import ProgressLog
from autointerp.storage.hashing import content_hash
from autointerp.study.comparison import (
    COMPARISON_KEY,
    FLOOR_COLUMNS,
    RECORD_COLUMNS,
    SCORE_COLUMNS,
    ModelResults,
    compare_models,
    comparison_table,
    plot_path,
)
from autointerp.study.data import prepare, split_windows
from autointerp.study.folders import save_pretrained
from autointerp.study.plots import plot_loss_curves, plot_model_comparison
from autointerp.study.tokenizer import load_tokenizer
from autointerp.study.training import train_model, trained_model_row
from autointerp.study.unigram import unigram_loss
from autointerp.table_checks import short_of_unigram, unmatched_parameters

GROUP = "study"
COMPARISON_GROUP = COMPARISON_KEY[0]
PARAMETER_TOLERANCE = 0.02  # the models' parameter counts agree within 2%
# What the comparison reads of each model's graph, and which columns.
COMPARED_TABLES = (
    ("scores", SCORE_COLUMNS),
    ("neuron_records", RECORD_COLUMNS),
    ("shuffled_scores", FLOOR_COLUMNS),
)


def model_key(activation: str) -> dg.AssetKey:
    """The asset that trains the study's `activation` model (upstream of that model's graph)."""
    return dg.AssetKey([GROUP, f"model_{activation}"])


def study_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The study's assets, and the comparison of the configured models; none without them."""
    study = settings.study
    assets = []
    if study is not None:
        assets += [
            training_data_asset(settings, study),
            *(trained_model_asset(settings, study, a) for a in study.activations),
            training_summary_asset(settings, study),
        ]
    if len(settings.comparison.models) >= 2:
        assets.append(model_comparison_asset(settings))
    return assets


def training_data_asset(settings: Settings, study: StudySpec) -> dg.AssetsDefinition:
    data = {k: getattr(study, k) for k in ("vocab_size", "context_length", "heldout_fraction")}

    @dg.asset(
        key=[GROUP, "training_data"],
        group_name=GROUP,
        code_version=f"study-data-1-{content_hash(settings.corpus, data, study.seed)}",
        description=(
            f"`{settings.corpus.source}` tokenized by a byte-level BPE of {study.vocab_size} "
            f"tokens trained on it (saved under {study.folder(settings.home)}/tokenizer), cut "
            f"into windows of {study.context_length} tokens, a seeded "
            f"{study.heldout_fraction:.0%} held out: window, split, token_ids."
        ),
        kinds={"delta", "polars"},
    )
    def training_data(context: dg.AssetExecutionContext) -> dg.Output:
        documents = iter_documents(
            settings.corpus, downloads=settings.downloads, allow_hub=settings.allow_hub
        )
        texts = [document.text for document in documents]  # read twice: tokenizer, windows
        tokenizer, frame = prepare(texts, study)
        save_pretrained(study.folder(settings.home) / "tokenizer", tokenizer)
        train, heldout = split_windows(frame)
        metadata = {
            "vocab_size": len(tokenizer),
            "train_tokens": int(train.size),
            "heldout_tokens": int(heldout.size),
            "unigram_loss": unigram_loss(train, heldout, len(tokenizer)),
        }
        return table_output(context, frame, metadata=metadata)

    return training_data


def trained_model_asset(
    settings: Settings, study: StudySpec, activation: str
) -> dg.AssetsDefinition:
    key = model_key(activation)
    name = study.model_names[activation]
    folder = study.model_folder(settings.home, activation)

    @dg.asset(
        key=key,
        ins={"training_data": dg.AssetIn(key=[GROUP, "training_data"])},
        group_name=GROUP,
        code_version=f"study-model-1-{content_hash(study.training_content(), activation)}",
        description=(
            f"Trains the {activation} model ({study.num_layers} layers, width "
            f"{study.hidden_size}) for {study.steps} steps and saves it to {folder}, where the "
            f"subject model {name} reads it. The row: parameter counts, held-out and unigram "
            "loss, the loss curve."
        ),
        kinds={"delta", "polars", "pytorch"},
        **gpu_step(settings),
        check_specs=[
            blocking_check(
                key,
                "beats_unigram",
                f"Held-out loss at least {study.min_margin} nats under the unigram baseline's.",
            )
        ],
    )
    def trained_model(context: dg.AssetExecutionContext, training_data: pl.DataFrame):
        train, heldout = split_windows(training_data)
        tokenizer = load_tokenizer(study.folder(settings.home) / "tokenizer")
        trained = train_model(
            activation,
            study,
            train,
            heldout,
            len(tokenizer),
            progress=ProgressLog(context.log.info, f"training {name}", "steps"),
        )
        row = trained_model_row(trained, name, unigram_loss(train, heldout, len(tokenizer)))
        # Checked before anything is written: a failing model leaves the previous one in place.
        results = validated(key, {"beats_unigram": short_of_unigram(row, study.min_margin)})
        save_pretrained(folder, trained.model, tokenizer)
        # Deterministic training writes the same row again: nothing downstream turns stale.
        yield table_output(
            context,
            row,
            metadata={
                **row.drop("curve").row(0, named=True),
                "tokens_per_second": trained.tokens / trained.seconds,
                "training_seconds": trained.seconds,
                "device": trained.device,
                "folder": dg.MetadataValue.path(str(folder)),
            },
        )
        yield from results

    return trained_model


def training_summary_asset(settings: Settings, study: StudySpec) -> dg.AssetsDefinition:
    key = dg.AssetKey([GROUP, "training_summary"])
    plot = study.folder(settings.home) / "loss_curves.png"

    @dg.asset(
        key=key,
        ins={f"model_{a}": dg.AssetIn(key=model_key(a)) for a in study.activations},
        group_name=GROUP,
        code_version="study-summary-1",
        description=(
            "One row per study model: parameter counts, held-out loss against the unigram "
            f"baseline, the loss curve; plotted to {plot}."
        ),
        kinds={"delta", "polars"},
        check_specs=[
            blocking_check(
                key,
                "parameters_matched",
                f"Parameter counts agree within {PARAMETER_TOLERANCE:.0%}.",
            )
        ],
    )
    def training_summary(context: dg.AssetExecutionContext, **models: pl.DataFrame):
        trained = pl.concat(models[f"model_{a}"] for a in study.activations)
        results = validated(
            key, {"parameters_matched": unmatched_parameters(trained, PARAMETER_TOLERANCE)}
        )
        plot_loss_curves(trained, plot)
        yield table_output(
            context,
            trained,
            metadata={
                "summary": dg.MetadataValue.md(_markdown(trained.drop("curve"))),
                "plot": dg.MetadataValue.path(str(plot)),
            },
        )
        yield from results

    return training_summary


def model_comparison_asset(settings: Settings) -> dg.AssetsDefinition:
    spec = settings.comparison
    models = [settings.model(name) for name in spec.models]
    reference = spec.reference or models[0].name
    plot = plot_path(settings.home)
    ins: Mapping[str, dg.AssetIn] = {
        f"{table}__{model.key_prefix}": dg.AssetIn(
            key=[model.key_prefix, table], metadata={"columns": list(columns)}
        )
        for model in models
        for table, columns in COMPARED_TABLES
    }

    @dg.asset(
        key=list(COMPARISON_KEY),
        ins=ins,
        group_name=COMPARISON_GROUP,
        code_version=summary_version(
            settings, f"across-models-1-{content_hash(reference, spec.depth_bins)}"
        ),
        description=(
            f"{', '.join(spec.models)} side by side, per explainer and simulator: by relative "
            "depth and over all layers, neurons, dead and undefined shares, mean, median and "
            "shares of ev_correlation ≥ 0.5 and ≥ 0.8 (test split, top_and_random; each "
            "neuron's sample chosen on valid) beside the chance floor, and each model's mean "
            f"minus {reference}'s with a bootstrap 95% interval; plotted to {plot}."
        ),
        kinds={"delta", "polars"},
    )
    def across_models(context: dg.AssetExecutionContext, **tables: pl.DataFrame) -> dg.Output:
        comparison = compare_models(
            [
                ModelResults(
                    name=model.name,
                    num_layers=model.num_layers,
                    scores=tables[f"scores__{model.key_prefix}"],
                    records=tables[f"neuron_records__{model.key_prefix}"],
                    shuffled=tables[f"shuffled_scores__{model.key_prefix}"],
                )
                for model in models
            ],
            reference=reference,
            depth_bins=spec.depth_bins,
            n_boot=settings.summaries.bootstrap_samples,
            seed=settings.summaries.bootstrap_seed,
        )
        plot_model_comparison(comparison, plot)
        return table_output(
            context,
            comparison,
            metadata={
                "comparison": dg.MetadataValue.md(_markdown(comparison_table(comparison))),
                "plot": dg.MetadataValue.path(str(plot)),
            },
        )

    return across_models


def _markdown(frame: pl.DataFrame) -> str:
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_rows=-1,
        tbl_cols=-1,
        float_precision=3,
    ):
        return str(frame)
