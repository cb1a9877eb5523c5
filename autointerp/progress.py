"""Progress of long work, reported through any logging callable at a bounded rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressLog:
    """A `(done, total)` callback that logs rate and time left at most every `every_s` seconds."""

    def __init__(
        self, log: Callable[[str], None], label: str, unit: str, every_s: float = 10.0
    ) -> None:
        self.log, self.label, self.unit, self.every_s = log, label, unit, every_s
        self.start = time.monotonic()
        self.last = self.start  # the first line after every_s: an early rate says little

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else float("nan")
        self.log(
            f"{self.label}: {done:,}/{total:,} {self.unit} ({100 * done / max(total, 1):.0f}%), "
            f"{rate:,.1f} {self.unit}/s, {elapsed:.0f}s elapsed, ~{left:.0f}s left"
        )
