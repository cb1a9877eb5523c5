"""A deep range captured in runs of a few layers (`capture_layers_per_run`), against one pass.

SmolLM2's first 12 layers over 1,000 excerpts, each plan in its own process (peak RSS by
`wait4`'s ru_maxrss, wall and CPU seconds), every run of a plan in turn, building its records:
- one pass over the 12 layers (the baseline);
- two runs of 6 layers, the second starting from the residual stream the first left (the
  default);
- two runs of 6 layers, the second running the blocks below its first layer again.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from autointerp.activations.capture import capture_records
from autointerp.activations.residuals import Handoff
from benchmarks.common import child_usage, corpus, default_settings, save, subject

LAYERS, PER_RUN, EXCERPTS = 12, 6, 1000
PLANS = ("one_pass", "handed_on", "recomputed")


def capture(plan: str, residuals: Path) -> None:
    """The runs of `plan`, one after another in this process, as the CLI's capture runs are."""
    settings = default_settings()
    frame = corpus(settings, subject(settings, through_layer=0), EXCERPTS)  # its tokenizer
    per_run = LAYERS if plan == "one_pass" else PER_RUN
    handoff = Handoff(residuals, "benchmark", LAYERS - 1 if plan == "handed_on" else 0)
    for first in range(0, LAYERS, per_run):
        layers = list(range(first, first + per_run))
        entering, leaving = handoff.streams(layers)
        model = subject(settings, through_layer=layers[-1], from_layer=first if entering else 0)
        records = capture_records(
            model, frame, layers, settings.records, entering=entering, leaving=leaving
        )
        del model, records


def measure(plan: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="autointerp-capture-runs-") as residuals:
        return child_usage([sys.executable, "-m", "benchmarks.capture_runs", plan, residuals])


def main() -> dict:
    plans = {plan: measure(plan) for plan in PLANS}
    base = plans["one_pass"]
    result = {
        "layers": LAYERS,
        "layers_per_run": PER_RUN,
        "excerpts": EXCERPTS,
        "plans": plans,
        **{
            f"{plan}_{what}_ratio": plans[plan][key] / base[key]
            for plan in PLANS[1:]
            for what, key in (("peak", "peak_rss_gb"), ("wall", "wall_s"), ("cpu", "cpu_s"))
        },
    }
    save("capture_runs", result)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3:
        capture(sys.argv[1], Path(sys.argv[2]))
    else:
        import json

        print(json.dumps(main(), indent=2))
