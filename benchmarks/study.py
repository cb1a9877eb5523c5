"""The activation study at its default sizes (autointerp.toml's [study]).

- throughput: training tokens/s of each activation's model over `steps` steps of the real
  training windows, each in its own process (with its peak RSS), as a ratio to the reference
  model's (the first activation) measured in the same run; tokens per CPU-second beside it (on
  a machine others share, wall time says more about them than about the study); the reload of
  those models. `python -m benchmarks.study --throughput` runs this part alone (minutes);
- study: the wall time and peak RSS of the whole `autointerp study` from scratch, in its own
  process and a temporary AUTOINTERP_HOME (sharing only the downloads), against the time its
  training steps took (training_seconds of each model): the share of the study that is training;
- reload (in both parts): the seconds each trained model takes to load back as a subject
  model, in a fresh process, against that process's import of the project;
- comparison: what the study found, per model: parameters, held-out against unigram loss, and
  the score distribution (all depths) with the difference from the reference and its interval.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from autointerp.config.settings import load_settings
from autointerp.study.comparison import plot_path
from benchmarks.common import RESULTS, save


def training_windows(folder: Path) -> Path:
    """The study's training windows of the configured corpus, saved for the child processes."""
    from autointerp.activations.corpus_sources import iter_documents
    from autointerp.study.data import prepare, split_windows

    settings = load_settings()
    documents = iter_documents(settings.corpus, downloads=settings.downloads, allow_hub=False)
    tokenizer, frame = prepare([document.text for document in documents], settings.study)
    tokenizer.save_pretrained(folder / "tokenizer")
    train, heldout = split_windows(frame)
    path = folder / "windows.npz"
    np.savez(path, train=train, heldout=heldout, vocab=len(tokenizer))
    return path


def measure(activation: str, windows: str, steps: int) -> dict:
    """In a child process: train `activation` for `steps` steps; tokens/s (of wall time, and of
    CPU time over all threads, which a busy machine does not change much) and peak RSS. The
    model is saved where `reload` finds it, in a home beside `windows`."""
    import resource

    import torch

    from autointerp.study.folders import save_pretrained
    from autointerp.study.tokenizer import load_tokenizer
    from autointerp.study.training import train_model

    study = load_settings().study
    data = np.load(windows)
    # The held-out evaluations are left out of the timing; keep them small.
    spec = replace(
        study, steps=steps, warmup_steps=min(study.warmup_steps, steps), eval_every=steps
    )
    cpu = time.process_time()
    trained = train_model(
        activation, spec, data["train"], data["heldout"][: spec.eval_windows], int(data["vocab"])
    )
    cpu = time.process_time() - cpu
    folder = Path(windows).parent
    model_folder = study.model_folder(folder / "home", activation)
    save_pretrained(model_folder, trained.model, load_tokenizer(folder / "tokenizer"))
    default_tokens = study.steps * study.batch_size * study.context_length
    return {
        "activation": activation,
        "tokens_per_second": trained.tokens / trained.seconds,
        "tokens_per_cpu_second": trained.tokens / cpu,
        "default_training_minutes": default_tokens / (trained.tokens / trained.seconds) / 60,
        "parameters": trained.parameters["parameters"],
        "mlp_width": trained.model.config.intermediate_size,
        "device": trained.device,
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def reload(home: str) -> dict:
    """In a child process: the seconds to import the project, then to load each study model."""
    started = time.perf_counter()
    from autointerp.activations.subject_model import load_subject_model

    settings = load_settings(home=home)
    imported = time.perf_counter() - started
    seconds = {}
    for name in settings.study.model_names.values():
        started = time.perf_counter()
        load_subject_model(
            settings.model(name),
            cache_dir=settings.model_cache,
            downloads=settings.downloads,
            allow_hub=False,
        )
        seconds[name] = time.perf_counter() - started
    return {
        "import_s": imported,
        "load_s": seconds,
        "ratio_to_import": {name: s / imported for name, s in seconds.items()},
    }


def child(arguments: list[str]) -> tuple[dict, float, float]:
    """Run `python -m …arguments` to completion: (its last JSON line or {}, wall s, peak RSS MB)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", *arguments], stdout=subprocess.PIPE, text=True
    )
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{out[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall, usage.ru_maxrss / 1024


def throughput(steps: int) -> dict:
    """Each activation's training throughput, as a ratio to the first's; then the reload of
    the models it trained."""
    activations = load_settings().study.activations
    with tempfile.TemporaryDirectory() as folder:
        windows = training_windows(Path(folder))
        runs = []
        for activation in activations:
            result, _, _ = child(
                ["benchmarks.study", "--child", activation, str(windows), str(steps)]
            )
            runs.append(result)
        reloaded, _, _ = child(["benchmarks.study", "--reload", str(Path(folder) / "home")])
    reference = runs[0]["tokens_per_second"]
    return {
        "runs": [
            {**run, "ratio_to_reference": run["tokens_per_second"] / reference} for run in runs
        ],
        "reload": reloaded,
    }


def whole_study() -> dict:
    """`autointerp study` from scratch in a temporary home; its wall time, RSS and results."""
    import dagster as dg
    import polars as pl

    from autointerp.storage.delta import read_table

    shared = load_settings()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        home.mkdir()
        (home / "downloads").symlink_to(shared.downloads)
        saved = dict(os.environ)
        os.environ.update(AUTOINTERP_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
        try:
            _, wall, peak = child(["pipelines.cli", "study"])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        training_seconds = {}
        with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
            for activation in shared.study.activations:
                event = instance.get_latest_materialization_event(
                    dg.AssetKey(["study", f"model_{activation}"])
                )
                metadata = event.asset_materialization.metadata
                training_seconds[activation] = metadata["training_seconds"].value
        reloaded, _, _ = child(["benchmarks.study", "--reload", str(home)])
        # The figures outlive the temporary home, beside the JSON.
        RESULTS.mkdir(exist_ok=True)
        for figure in (home / "study" / "loss_curves.png", plot_path(home)):
            shutil.copyfile(figure, RESULTS / f"study_{figure.name}")
        trained = read_table(str(home / "delta/study/training_summary")).drop("curve")
        comparison = read_table(str(home / "delta/comparison/across_models"))
    overall = comparison.filter(pl.col("depth") == "all").drop(
        "explainer_hash", "simulator_hash", "split", "scored_on", "reference", "depth"
    )
    return {
        "wall_s": wall,
        "peak_rss_mb": peak,
        "training_s": training_seconds,
        "training_share_of_wall": sum(training_seconds.values()) / wall,
        "reload": reloaded,
        "models": trained.to_dicts(),
        "comparison_all_depths": overall.to_dicts(),
        "comparison": comparison.to_dicts(),
    }


def main(steps: int = 40) -> dict:
    result = {"throughput": throughput(steps), "study": whole_study()}
    save("study", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        activation, windows, steps = sys.argv[2:5]
        print(json.dumps(measure(activation, windows, int(steps))))
    elif sys.argv[1:2] == ["--reload"]:
        print(json.dumps(reload(sys.argv[2])))
    elif sys.argv[1:2] == ["--throughput"]:  # the training alone: minutes, not tens of them
        result = {"throughput": throughput(40)}
        save("study_throughput", result)
        print(json.dumps(result, indent=2, default=str))
    else:
        print(json.dumps(main(), indent=2, default=str))
