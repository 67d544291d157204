"""The code location loaded by workspace.yaml and `dagster dev`."""

import os

import dagster as dg

from pipelines.assets import ALL_ASSETS
from pipelines.assets.data import capture_manifest, patch_sets
from pipelines.jobs import JOBS
from pipelines.recovery import stale_runs_sensor
from pipelines.resources import (
    CaptureDataResource,
    MlflowResource,
    ProfileResource,
    QualityGatesResource,
    StorageResource,
)
from pipelines.schedules import retrain_schedule
from pipelines.sensors import captures_sensor, classifier_after_gans, gans_after_prepare
from smh_ml.paths import anchored
from smh_ml.tracking.tracker import DEFAULT_ARTIFACT_ROOT, DEFAULT_MODEL_NAME, DEFAULT_UI_URL, tracking_uri


def default_resources() -> dict:
    """Resources from the environment (SMH_*), with local defaults."""
    ceiling = os.environ.get("SMH_FID_CEILING")
    settings = [x.strip() for x in os.environ.get("SMH_SETTINGS", "").split(";") if x.strip()]
    return {
        "profile": ProfileResource(name=os.environ.get("SMH_PROFILE", "auto"), settings=settings),
        # relative roots resolve against the project (smh_ml.paths), never the working folder
        "captures": CaptureDataResource(root=str(anchored(os.environ.get("SMH_DATA_ROOT", "data")))),
        "storage": StorageResource(root=str(anchored(os.environ.get("SMH_STORAGE_ROOT", "artifacts")))),
        "mlflow": MlflowResource(
            tracking_uri=tracking_uri(),
            artifact_root=str(anchored(os.environ.get("SMH_MLFLOW_ARTIFACTS", DEFAULT_ARTIFACT_ROOT))),
            model_name=os.environ.get("SMH_MODEL_NAME", DEFAULT_MODEL_NAME),
            ui_url=os.environ.get("SMH_MLFLOW_UI", DEFAULT_UI_URL)),
        "gates": QualityGatesResource(
            fid_ceiling=float(ceiling) if ceiling else None,
            accuracy_floor=float(os.environ.get("SMH_ACCURACY_FLOOR", "0.0")),
            baseline_margin=float(os.environ.get("SMH_BASELINE_MARGIN", "0.02")),
            promotion_margin=float(os.environ.get("SMH_PROMOTION_MARGIN", "0.0"))),
    }


START_METHODS = ("forkserver", "spawn")


def executor() -> dg.ExecutorDefinition:
    """Dagster's multiprocess executor, or with ``SMH_EXECUTOR=celery`` the Celery executor:
    every step goes to a ``dagster-celery`` worker through the broker ``SMH_CELERY_BROKER``
    (results over ``SMH_CELERY_BACKEND``, by default the broker), see docs/DEPLOY.md.

    Steps start from a fork server (``SMH_START_METHOD``, default ``forkserver``) that has
    imported this code location once: a spawned step imports Dagster, torch, MLflow and Great
    Expectations afresh, 5-8 s on 2 cores, and the whole graph has 18 steps. Each step is still
    its own process (a crash or a kill ends only that step); ``spawn`` is Dagster's default, for
    a library that does not survive a fork. The server lives as long as the process that
    launched it and keeps the environment (SMH_* roots, profile) it had when it started: a
    process that runs jobs under a changed environment needs ``spawn``."""
    kind = os.environ.get("SMH_EXECUTOR", "multiprocess")
    if kind == "multiprocess":
        method = os.environ.get("SMH_START_METHOD", "forkserver")
        if method not in START_METHODS:
            raise ValueError(f"SMH_START_METHOD={method!r}: expected one of {', '.join(START_METHODS)}")
        start = {method: {"preload_modules": ["pipelines.definitions"]} if method == "forkserver" else {}}
        base = dg.multiprocess_executor
        # run config (max_concurrent, retries, a start method of its own) still applies
        return base.configured(lambda config: {**config, "start_method": config.get("start_method") or start},
                               name="multiprocess", config_schema=base.config_schema.config_type)
    if kind != "celery":
        raise ValueError(f"SMH_EXECUTOR={kind!r}: expected multiprocess or celery")
    from dagster_celery import celery_executor  # the [scale] extra

    broker = os.environ.get("SMH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    return celery_executor.configured(
        {"broker": broker, "backend": os.environ.get("SMH_CELERY_BACKEND", broker)}, name="celery")


main_job = dg.define_asset_job(
    "main", selection=dg.AssetSelection.assets(capture_manifest, patch_sets),
    description="Validate captures and build patch sets (the first stage; `python -m pipelines` runs all).")

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[main_job, *JOBS],
    sensors=[captures_sensor, gans_after_prepare, classifier_after_gans, stale_runs_sensor],
    schedules=[retrain_schedule],
    resources=default_resources(),
    executor=executor(),
)


def job(name: str) -> dg.JobDefinition:
    return defs.resolve_job_def(name)


# Module-level job factories, so `dagster.reconstructable` can rebuild them in subprocesses.
def prepare() -> dg.JobDefinition:
    return job("prepare")


def gans() -> dg.JobDefinition:
    return job("gans")


def classifier() -> dg.JobDefinition:
    return job("classifier")
