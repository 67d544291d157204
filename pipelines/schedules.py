"""Retrain on a schedule (weekly by default; SMH_RETRAIN_CRON overrides).

The schedule requests ``prepare`` on the current captures; the sensors then request what
follows (pipelines/sensors.py): the GANs of classes without a synthetic set, and the
classifier. So a weekly retrain also repairs a class whose GAN run was killed.
"""

import os

import dagster as dg

from pipelines.jobs import prepare_job

retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain", job=prepare_job, cron_schedule=os.environ.get("SMH_RETRAIN_CRON", "0 3 * * 1"),
    default_status=dg.DefaultScheduleStatus.RUNNING,
    tags={"reason": "weekly retrain"},
    description="Weekly: prepare on the current data version, then (by the sensors) missing GANs and the "
                "classifier.")
