"""corpus: fixed-length token excerpts of the configured text source, tokenized for one model."""

import dagster as dg
import polars as pl

from assets.common import safe_metadata, table_preview
from autointerp.activations.corpus import build_corpus, corpus_id, corpus_summary, sample_excerpts
from autointerp.activations.corpus_sources import iter_documents
from autointerp.activations.subject_model import model_identity
from autointerp.config.settings import ModelSpec, Settings
from autointerp.storage.hashing import content_hash
from resources.subject_models import SubjectModels

LOGIC_VERSION = "corpus-2"


class CorpusConfig(dg.Config):
    # A seeded uniform sample of this many excerpts; None: the configured default (all of them).
    max_excerpts: int | None = None


def corpus_asset(settings: Settings, model: ModelSpec) -> dg.AssetsDefinition:
    # The corpus depends on the tokenizer, which comes with the weights: not on their dtype.
    tokenizer = {
        key: value
        for key, value in model_identity(model, settings.model_cache).items()
        if key != "dtype"
    }

    @dg.asset(
        key=[model.key_prefix, "corpus"],
        group_name=model.key_prefix,
        code_version=f"{LOGIC_VERSION}-{content_hash(settings.corpus, tokenizer)}",
        description=(
            f"Excerpts of {settings.corpus.excerpt_tokens} tokens of `{settings.corpus.source}`, "
            f"tokenized by {model.name}: corpus_id, excerpt_id, text, tokens, token_ids, source, "
            "license. Each corpus (source, sample, seed, tokenizer) is kept under its own "
            "corpus_id, side by side; materializing makes it the current corpus, and writing one "
            "that is there already is a no-op."
        ),
        # One table partition per corpus; readers read the one this run made, or the latest.
        metadata={"key_column": "corpus_id"},
        kinds={"delta", "polars"},
    )
    def corpus(
        context: dg.AssetExecutionContext, config: CorpusConfig, subject_models: SubjectModels
    ) -> dg.Output[pl.DataFrame]:
        subject = subject_models.load(model, through_layer=0)  # its tokenizer
        documents = iter_documents(
            settings.corpus, downloads=settings.downloads, allow_hub=subject_models.allow_hub
        )
        frame = build_corpus(
            documents,
            subject.tokenizer,
            excerpt_tokens=settings.corpus.excerpt_tokens,
            context_length=subject.context_length,
        )
        wanted = config.max_excerpts or settings.corpus.max_excerpts
        if wanted:
            frame = sample_excerpts(frame, wanted, settings.records.seed)
        identity = corpus_id(frame, tokenizer)
        metadata = {
            **corpus_summary(frame),
            "max_excerpts": wanted or "all",
            "corpus_id": identity,
            "preview": table_preview(frame.select("excerpt_id", "source", "text")),
        }
        # The data version is the content's identity: an identical corpus changes nothing
        # downstream, another one makes everything captured over the old one stale.
        return dg.Output(
            frame.select(pl.lit(identity).alias("corpus_id"), pl.all()),
            metadata=safe_metadata(metadata),
            data_version=dg.DataVersion(identity),
        )

    return corpus
