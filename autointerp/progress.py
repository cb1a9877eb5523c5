"""Progress of long work, reported through any logging callable at a bounded rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# How stages report progress: called with (done, total), e.g. a ProgressLog.
Progress = Callable[[int, int], None]


def duration(seconds: float) -> str:
    """A duration as a person reads it: 45 s, 12 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rate(per_second: float, unit: str) -> str:
    """A rate in the unit of time that shows it best: never "0.0 rows/s" for slow work."""
    for scale, per in ((1, "s"), (60, "min"), (3600, "h")):
        if per_second * scale >= 1:
            return f"{per_second * scale:,.1f} {unit}/{per}"
    return f"{duration(1 / per_second)} per {unit.removesuffix('s')}"


class ProgressLog:
    """A `(done, total)` callback that logs progress at most every `every_s` seconds: done,
    elapsed, the observed rate and the time left at that rate, and `detail()` (e.g. an LLM
    client's calls in flight and retries) when given.

    The clock starts at the first report, so set-up before the work does not distort the rate.
    Used as a context manager it also logs every `every_s` seconds while nothing finishes, so a
    stage waiting on slow calls is never silent.
    """

    def __init__(
        self,
        log: Callable[[str], None],
        label: str,
        unit: str,
        every_s: float = 10.0,
        detail: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log, self.label, self.unit, self.every_s = log, label, unit, every_s
        self.detail, self.clock = detail, clock
        self.start: float | None = None
        self.first = 0  # done at the first report
        self.last = 0.0
        self.done, self.total = 0, 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        with self._lock:
            self.done, self.total = done, total
            if self.start is None:
                self.start, self.first, self.last = now, done, now
                if done < total:
                    return
            if done < total and now - self.last < self.every_s:
                return
            self.last = now
            self.log(self.line(now))  # under the lock: lines come in order

    def line(self, now: float) -> str:
        done, total = self.done, self.total
        elapsed = max(now - (now if self.start is None else self.start), 1e-9)
        per_second = (done - self.first) / elapsed
        if done >= total:
            left = "done"
        elif per_second > 0:
            left = f"~{duration((total - done) / per_second)} left"
        else:
            left = "time left unknown until one finishes"
        speed = rate(per_second, self.unit) if done > self.first else f"no {self.unit} done yet"
        detail = f", {self.detail()}" if self.detail is not None else ""
        return (
            f"{self.label}: {done:,}/{total:,} {self.unit} ({100 * done / max(total, 1):.0f}%)"
            f"{detail}, {speed}, {duration(elapsed)} elapsed, {left}"
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.every_s):
            now = self.clock()
            with self._lock:
                if self.start is None or self.done >= self.total or now - self.last < self.every_s:
                    continue
                self.last = now
                self.log(self.line(now))

    def __enter__(self) -> ProgressLog:
        if self.every_s > 0:  # with no interval every report logs: no heartbeat needed
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
