"""Progress lines: bounded in number, and the last one always written."""

import threading

from autointerp.progress import ProgressLog, duration, rate


def test_progress_logs_at_a_bounded_rate_and_at_the_end():
    lines: list[str] = []
    progress = ProgressLog(lines.append, "explain", "rows", every_s=3600)
    for done in range(1, 101):
        progress(done, 100)
    assert len(lines) == 1 and lines[0].startswith("explain: 100/100 rows (100%)")


def test_every_report_logs_when_the_interval_is_zero():
    lines: list[str] = []
    progress = ProgressLog(lines.append, "pass", "excerpts", every_s=0)
    for done in (10, 20, 30):
        progress(done, 30)
    assert [line.split(" (")[0] for line in lines] == [
        "pass: 20/30 excerpts",
        "pass: 30/30 excerpts",
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slow_work_shows_a_rate_in_a_unit_that_reads_and_a_time_left():
    lines: list[str] = []
    clock = Clock()
    progress = ProgressLog(lines.append, "simulate", "rows", every_s=0, clock=clock)
    progress(0, 100)
    clock.now = 600.0  # one row in ten minutes
    progress(1, 100)
    assert lines == ["simulate: 1/100 rows (1%), 6.0 rows/h, 10 min elapsed, ~16.5 h left"]
    assert duration(45) == "45 s" and rate(0.5, "calls") == "30.0 calls/min"
    assert rate(1e-5, "rows") == "27.8 h per row"


def test_waiting_work_is_reported_with_its_detail_while_nothing_finishes():
    lines: list[str] = []
    clock = Clock()
    beat = threading.Event()

    def log(line: str) -> None:
        lines.append(line)
        beat.set()

    with ProgressLog(
        log, "simulate", "rows", every_s=0.01, detail=lambda: "1 call in flight", clock=clock
    ) as progress:
        progress(0, 10)
        clock.now = 120.0
        assert beat.wait(timeout=60)
    assert lines[0] == (
        "simulate: 0/10 rows (0%), 1 call in flight, no rows done yet, 2 min elapsed, "
        "time left unknown until one finishes"
    )
