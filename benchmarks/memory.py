"""Peak memory of `autointerp run` as the excerpts or the layers double, and of the demo, with
the demo's wall time (goals: the demo under 2.5 GB and 10 minutes on 2 cores; 6 layers over
1,000 excerpts under 1.5 GB; doubling the excerpts, the layers or the neuron sample adds at most
10%, or no more than the records they add). The neuron sample is doubled from a halved base (the
base explains every neuron): the baseline explainer on the first 768 neurons of each layer and the
revision rounds on the first 16, through a copy of autointerp.toml.

Each configuration runs in its own process on a fresh AUTOINTERP_HOME (sharing the converted
model and the downloads), so its peak RSS (`wait4`'s ru_maxrss) is that of one run alone: the
corpus, the capture and every stage after it.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path

from benchmarks.common import GB, child_usage, default_settings, save

BASE = ("0-5", 1000)
CONFIGURATIONS = {
    "base": BASE,
    "excerpts_doubled": ("0-5", 2000),
    "layers_doubled": ("0-11", 1000),
    "neurons_halved": BASE,  # under HALVED_SAMPLE
}
# autointerp.toml's lines, and what "neurons_halved" reads instead.
HALVED_SAMPLE = {
    "[explainers.token-statistics-baseline]\n": (
        '[explainers.token-statistics-baseline]\nneuron_sample = "first:768"\n'
    ),
    'neuron_sample = "first:32"': 'neuron_sample = "first:16"',
}


def demo_args() -> list[str]:
    """The Makefile's DEMO_ARGS: the demo measured is the one `make demo` runs."""
    makefile = Path(__file__).parents[1] / "Makefile"
    for line in makefile.read_text().splitlines():
        if line.startswith("DEMO_ARGS ?="):
            return shlex.split(line.split("?=", 1)[1])
    raise ValueError("no DEMO_ARGS in the Makefile")


def halved_config(folder: Path) -> Path:
    """A copy of autointerp.toml with the neuron samples of HALVED_SAMPLE."""
    text = (Path(__file__).parents[1] / "autointerp.toml").read_text()
    for line, replacement in HALVED_SAMPLE.items():
        if text.count(line) != 1:
            raise ValueError(f"autointerp.toml has {text.count(line)} lines {line!r}, not one")
        text = text.replace(line, replacement)
    path = folder / "autointerp.toml"
    path.write_text(text)
    return path


def run(args: list[str], halved: bool = False) -> dict:
    """`autointerp run ARGS` in a child process: peak RSS, wall and CPU seconds."""
    settings = default_settings()
    with tempfile.TemporaryDirectory(prefix="autointerp-memory-") as home:
        for shared in ("models", "downloads"):  # converted once, never per configuration
            (settings.home / shared).mkdir(parents=True, exist_ok=True)
            os.symlink(settings.home / shared, Path(home) / shared)
        env = {**os.environ, "AUTOINTERP_HOME": home, "DAGSTER_HOME": f"{home}/dagster"}
        if halved:
            env["AUTOINTERP_CONFIG"] = str(halved_config(Path(home)))
        usage = child_usage([sys.executable, "-m", "pipelines.cli", "run", *args], env)
    return {"args": " ".join(args), **usage}


def records_gb(layers: int, excerpts_kept: int, neurons: int = 1536, tokens: int = 64) -> float:
    """What a layer's records hold in float32: neurons x kept excerpts x tokens."""
    return layers * neurons * excerpts_kept * tokens * 4 / GB


def main() -> dict:
    spec = default_settings().records
    kept = spec.top_k + spec.random_k + spec.reference_k + 4 * spec.quantile_k
    arguments = {
        name: ["--layers", layers, "--excerpts", str(excerpts)]
        for name, (layers, excerpts) in CONFIGURATIONS.items()
    }
    runs = {name: run(args, halved=name == "neurons_halved") for name, args in arguments.items()}
    # The demo is measured once more unless it is the base configuration itself.
    demo = demo_args()
    runs["demo"] = runs["base"] if demo == arguments["base"] else run(demo)
    base = runs["base"]["peak_rss_gb"]
    result = {
        "runs": runs,
        "excerpts_doubled_ratio": runs["excerpts_doubled"]["peak_rss_gb"] / base,
        "layers_doubled_ratio": runs["layers_doubled"]["peak_rss_gb"] / base,
        "layers_doubled_growth_gb": runs["layers_doubled"]["peak_rss_gb"] - base,
        "records_added_gb": records_gb(6, kept),
        "neurons_doubled_ratio": base / runs["neurons_halved"]["peak_rss_gb"],
        "demo_peak_rss_gb": runs["demo"]["peak_rss_gb"],
        "demo_wall_min": runs["demo"]["wall_s"] / 60,
    }
    save("memory", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
