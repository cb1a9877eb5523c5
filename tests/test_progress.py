"""Progress lines: bounded in number, and the last one always written."""

from autointerp.progress import ProgressLog


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
