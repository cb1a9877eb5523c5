"""Peak memory of capture as the corpus grows 4x (goal: growth <= 10% beyond the input itself).

Each size runs in its own process, so peak RSS is that of one capture: model + corpus + records.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys

from benchmarks.common import save

LAYERS = [0, 1, 2, 3]


def measure(excerpts: int) -> dict:
    """Run in a child process: capture LAYERS over `excerpts`, report peak RSS and input size."""
    from autointerp.activations.capture import capture_records, token_matrix
    from benchmarks.common import corpus, default_settings, subject

    settings = default_settings()
    model = subject(settings)
    frame = corpus(settings, model, excerpts)
    _, tokens = token_matrix(frame)
    input_bytes = frame.estimated_size() + tokens.nbytes
    capture_records(model, frame, LAYERS, settings.records)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"excerpts": frame.height, "peak_rss": peak, "input_bytes": input_bytes}


def main(excerpts: int = 1000) -> dict:
    runs = []
    for size in (excerpts, 4 * excerpts):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--child", str(size)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    small, large = runs
    growth = large["peak_rss"] - small["peak_rss"]
    input_growth = large["input_bytes"] - small["input_bytes"]
    result = {
        "layers": LAYERS,
        "small": small,
        "large": large,
        "rss_growth_mb": growth / 2**20,
        "input_growth_mb": input_growth / 2**20,
        "growth_beyond_input_fraction": (growth - input_growth) / small["peak_rss"],
    }
    save("memory", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure(int(sys.argv[2]))))
    else:
        print(json.dumps(main(), indent=2))
