"""`python -m benchmarks` (or `make bench`): every benchmark, results printed and saved as JSON
under benchmarks/results/. Ratios compare against a baseline measured in the same run.
`python -m benchmarks NAME ...` runs some, the opt-in ones too (they need a server that
`make bench` does not install)."""

from __future__ import annotations

import json
import sys

from benchmarks import (
    capture,
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
    viewer,
)

BENCHMARKS = {
    "capture": capture.main,
    "memory": memory.main,
    "llm": llm.main,
    "scoring": scoring.main,
    "lineage": lineage.main,
    "refresh": refresh.main,
    "revisions": revisions.main,
    "scale": scale.main,
    "interchange": interchange.main,
    "simulator_methods": simulator_methods.main,
    "viewer": viewer.main,
    "storage": storage.main,
}
# Run only when named: `make bench-llama` installs what they need.
OPT_IN = {"llama_server": llama_server.main}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHMARKS)
    for name in chosen:
        print(f"== {name}", flush=True)
        print(json.dumps((BENCHMARKS | OPT_IN)[name](), indent=2, default=str), flush=True)
