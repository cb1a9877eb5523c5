"""A run whose process was killed is marked failed by the next run; a live one is left alone."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from pipelines.run_records import fail_dead_runs

RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import dagster as dg

    @dg.asset
    def slow() -> None:
        Path(sys.argv[1]).write_text("running")
        time.sleep(120)

    dg.materialize([slow], instance=dg.DagsterInstance.get())
    """
)


def test_a_killed_run_is_marked_failed_and_a_live_one_is_not(tmp_path: Path):
    home, marker = tmp_path / "dagster", tmp_path / "started"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    worker = subprocess.Popen(
        [sys.executable, "-c", RUN, str(marker)],
        env={**os.environ, "DAGSTER_HOME": str(home)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert worker.poll() is None, "the run's process ended early"
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.2)
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED

        assert fail_dead_runs(instance) == []  # its process is alive
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

        assert fail_dead_runs(instance) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert fail_dead_runs(instance) == []
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
