"""Progress of long work, reported through any logging callable at a bounded rate."""

from __future__ import annotations

import time
from collections.abc import Callable

# How stages report progress: called with (done, total), e.g. a ProgressLog.
Progress = Callable[[int, int], None]


class ProgressLog:
    """A `(done, total)` callback that logs rate and time left at most every `every_s` seconds.

    The clock starts at the first report, so set-up before the work does not distort the rate.
    """

    def __init__(
        self, log: Callable[[str], None], label: str, unit: str, every_s: float = 10.0
    ) -> None:
        self.log, self.label, self.unit, self.every_s = log, label, unit, every_s
        self.start: float | None = None
        self.first = 0  # done at the first report
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start, self.first, self.last = now, done, now
            if done < total:
                return
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = (done - self.first) / elapsed
        left = f"~{(total - done) / rate:.0f}s left" if rate > 0 else "time left unknown"
        self.log(
            f"{self.label}: {done:,}/{total:,} {self.unit} ({100 * done / max(total, 1):.0f}%), "
            f"{rate:,.1f} {self.unit}/s, {elapsed:.0f}s elapsed, {left}"
        )
