"""Retrain on a schedule (weekly by default; SMH_RETRAIN_CRON overrides)."""

import os

import dagster as dg

from pipelines.jobs import retrain_job

retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain", job=retrain_job, cron_schedule=os.environ.get("SMH_RETRAIN_CRON", "0 3 * * 1"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrains the classifier on the current data version.")
