"""Runs whose process was killed (kill -9, a lost machine) are marked failed, not left running.

Dagster's own run monitoring (``run_monitoring`` in dagster.yaml, with the daemon) times out
runs stuck in STARTING or CANCELING, but the default run launcher cannot tell whether a STARTED
run's worker is alive, and ``python -m pipelines`` has no daemon at all. Every run worker logs
its process id in its first engine event ("parent process (pid: N)"); on a local instance a
run still STARTED whose process is gone is dead, and is reported failed together with the MLflow
runs it left RUNNING. ``python -m pipelines`` does this on start, and ``stale_runs_sensor`` every
few minutes while the daemon runs.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.runs.sqlite import SqliteRunStorage

from pipelines.resources import MlflowResource
from smh_ml.io import pid_alive

IN_PROGRESS = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING)


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process id the run worker logged first (its executor's parent process)."""
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20).records:
        event = record.event_log_entry.dagster_event
        pid = (getattr(event.event_specific_data, "metadata", None) or {}).get("pid") if event else None
        if pid is not None and str(pid.value).isdigit():
            return int(pid.value)
    return None


def is_local(instance: dg.DagsterInstance) -> bool:
    """Only a sqlite instance is sure to run every run on this machine, where a pid means
    something; a shared (Postgres) instance relies on its run launcher's monitoring."""
    return isinstance(instance.run_storage, SqliteRunStorage)


def dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """STARTED runs of this machine whose run worker process no longer exists."""
    if not is_local(instance):
        return []
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = run_worker_pid(instance, run.run_id)
        if pid is not None and not pid_alive(pid):
            dead.append(run)
    return dead


def recover(instance: dg.DagsterInstance, mlflow: MlflowResource | None = None) -> dict[str, list[str]]:
    """Report dead runs failed, then fail the MLflow runs whose Dagster run or process is gone."""
    dagster_failed = []
    for run in dead_runs(instance):
        instance.report_run_failed(run, "its run worker process ended without finishing the run "
                                        "(killed); marked failed by pipelines.recovery")
        dagster_failed.append(run.run_id)

    def alive(run_id: str) -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.status in IN_PROGRESS

    mlflow_failed = mlflow.tracker().fail_stale_runs(alive) if mlflow is not None else []
    return {"dagster": dagster_failed, "mlflow": mlflow_failed}


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks failed the runs (Dagster and MLflow) whose process was killed.")
def stale_runs_sensor(context: dg.SensorEvaluationContext, mlflow: MlflowResource) -> dg.SkipReason:
    failed = recover(context.instance, mlflow)
    if failed["dagster"] or failed["mlflow"]:
        context.log.warning(f"marked failed: Dagster runs {failed['dagster']}, MLflow runs {failed['mlflow']}")
    return dg.SkipReason(f"{len(failed['dagster'])} Dagster and {len(failed['mlflow'])} MLflow runs marked failed")
