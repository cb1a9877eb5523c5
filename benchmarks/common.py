"""Shared set-up for benchmarks: the offline default model and a slice of its corpus."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from autointerp.activations.corpus import build_corpus
from autointerp.activations.corpus_sources import iter_documents
from autointerp.activations.subject_model import SubjectModel, load_subject_model
from autointerp.config.settings import Settings, load_settings, prepare_home

RESULTS = Path(__file__).parent / "results"


def default_settings() -> Settings:
    settings = load_settings()
    prepare_home(settings.home)
    return settings


def subject(settings: Settings, dtype: str | None = None, **layers: int) -> SubjectModel:
    """The default model (in `dtype`, when given); `layers`: `through_layer`, `from_layer`."""
    spec = settings.model()
    if dtype:
        from dataclasses import replace

        spec = replace(spec, dtype=dtype)
    return load_subject_model(
        spec,
        cache_dir=settings.model_cache,
        downloads=settings.downloads,
        allow_hub=False,
        **layers,
    )


def corpus(settings: Settings, model: SubjectModel, excerpts: int) -> pl.DataFrame:
    documents = iter_documents(settings.corpus, downloads=settings.downloads, allow_hub=False)
    return build_corpus(
        documents,
        model.tokenizer,
        excerpt_tokens=settings.corpus.excerpt_tokens,
        context_length=model.context_length,
        max_excerpts=excerpts,
        progress=False,
    )


def best_of(repeats: int, *works: Callable[[], object]) -> list[float]:
    """The fastest of `repeats` timings of each work, run interleaved: the least disturbed by
    other load on a shared machine, and disturbed alike."""
    times: list[list[float]] = [[] for _ in works]
    for _ in range(repeats):
        for work, spent in zip(works, times, strict=True):
            start = time.perf_counter()
            work()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))


GB = 2**30


def child_usage(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `command` in a child process of its own: its peak RSS (`wait4`'s ru_maxrss), wall and
    CPU seconds. A failing child raises."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return {
        "peak_rss_gb": usage.ru_maxrss * 1024 / GB,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
