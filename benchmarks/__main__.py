"""`python -m benchmarks` (or `make bench`): every benchmark but those run by name only, results
printed and saved as JSON under benchmarks/results/; `python -m benchmarks NAME …` runs those
named. Ratios compare against a baseline measured in the same run."""

from __future__ import annotations

import json
import sys

from benchmarks import (
    capture,
    capture_runs,
    interchange,
    lineage,
    llama_server,
    llm,
    memory,
    refresh,
    revisions,
    scale,
    scoring,
    simulator_methods,
    storage,
    study,
    viewer,
)

BENCHMARKS = {
    "capture": capture.main,
    "capture_runs": capture_runs.main,
    "memory": memory.main,
    "llm": llm.main,
    "scoring": scoring.main,
    "lineage": lineage.main,
    "refresh": refresh.main,
    "revisions": revisions.main,
    "scale": scale.main,
    "study": study.main,
    "llama_server": llama_server.main,
    "interchange": interchange.main,
    "simulator_methods": simulator_methods.main,
    "viewer": viewer.main,
    "storage": storage.main,
}
# Run by name only: the study trains its models from scratch (tens of minutes on 2 cores), and
# `llama_server` needs the server `make bench-llama` installs.
BY_NAME_ONLY = {"study", "llama_server"}

if __name__ == "__main__":
    chosen = sys.argv[1:] or [name for name in BENCHMARKS if name not in BY_NAME_ONLY]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from: {', '.join(BENCHMARKS)}")
    for name in chosen:
        print(f"== {name}", flush=True)
        print(json.dumps(BENCHMARKS[name](), indent=2, default=str), flush=True)
