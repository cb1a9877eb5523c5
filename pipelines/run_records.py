"""Keeping Dagster's run records true: a run whose process died (killed, machine rebooted) stays
STARTED forever unless someone says otherwise; this says so, when the next run starts.

Only for an instance on this machine (SQLite run storage): its runs' processes are local, so a
pid that no longer exists, or now belongs to a process started after the run, means the run is
dead. A shared instance (Postgres) relies on Dagster's run monitoring instead.
"""

from __future__ import annotations

import dagster as dg
import psutil
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

ALIVE = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every run recorded as in progress whose process is gone; their ids."""
    if not isinstance(instance.run_storage, SqliteRunStorage):
        return []
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=ALIVE)):
        pid = _run_pid(instance, run.run_id)
        if pid is None or _alive(pid, instance, run.run_id):
            continue
        instance.report_run_failed(
            run, f"the run's process (pid {pid}) ended without finishing the run"
        )
        failed.append(run.run_id)
    return failed


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid the run's executor reported when it started executing steps."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        value = data.metadata.get("pid") if data else None
        if value is not None:
            return int(value.value)
    return None


def _alive(pid: int, instance: dg.DagsterInstance, run_id: str) -> bool:
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    record = instance.get_run_record_by_id(run_id)
    run_start = record.start_time if record else None
    # A process created after the run started is another process given the same pid.
    return run_start is None or started <= run_start + 1
