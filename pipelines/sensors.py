"""Sensors: the capture root decides, and each stage requests the next.

- ``captures_sensor``: a new class folder adds a defect-class partition; a new data version
  (new class or new captures) requests ``prepare``. On its first evaluation it does not
  re-request a data version the last ``capture_manifest`` was already built from, so
  starting the UI on unchanged data launches nothing.
- ``gans_after_prepare``: when ``prepare`` succeeds, the ``gans`` runs of the defect classes
  that have no synthetic set (a new class, or a run killed before its set was written), or
  else ``classifier``.
- ``classifier_after_gans``: when a ``gans`` run succeeds and no class lacks its set and no
  other ``gans`` run is in flight, ``classifier`` (retrained with the current class count).

Nothing in code names a class.
"""

import dagster as dg

from pipelines.jobs import classifier_job, gan_job, prepare_job
from pipelines.partitions import defect_classes
from pipelines.resources import CaptureDataResource, ProfileResource, StorageResource
from smh_ml.synthetic.pgan import missing_synthetic


def built_version(instance: dg.DagsterInstance) -> str | None:
    """The data version the latest ``capture_manifest`` materialisation was built from."""
    event = instance.get_latest_materialization_event(dg.AssetKey("capture_manifest"))
    materialization = event.asset_materialization if event else None
    value = materialization.metadata.get("data_version") if materialization else None
    return None if value is None else str(value.value)


@dg.sensor(job=prepare_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the capture root for new defect classes and new captures.")
def captures_sensor(context: dg.SensorEvaluationContext, captures: CaptureDataResource,
                    profile: ProfileResource) -> dg.SensorResult:
    clean = profile.get().clean_class
    defects = [c for c in captures.class_folders() if c != clean]
    known = set(context.instance.get_dynamic_partitions(defect_classes.name))
    new = [c for c in defects if c not in known]
    version = captures.version()
    seen = context.cursor if context.cursor is not None else built_version(context.instance)
    requests = []
    if new or version != seen:
        reason = f"new defect classes {new}" if new else "new captures"
        requests.append(dg.RunRequest(run_key=f"prepare-{version}-{'-'.join(new)}",
                                      tags={"data_version": version, "reason": reason}))
        context.log.info(f"{reason}: data version {version}")
    return dg.SensorResult(
        run_requests=requests, cursor=version,
        dynamic_partitions_requests=[defect_classes.build_add_request(new)] if new else [])


def classes_without_synthetic(storage: StorageResource, profile: ProfileResource,
                              instance: dg.DagsterInstance) -> list[str]:
    prof = profile.get()
    classes = sorted(instance.get_dynamic_partitions(defect_classes.name))
    return missing_synthetic(storage.store(prof.name).gan_dir, classes)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[prepare_job],
                      request_jobs=[gan_job, classifier_job], default_status=dg.DefaultSensorStatus.RUNNING,
                      description="After prepare: the GANs of classes without a synthetic set, else the classifier.")
def gans_after_prepare(context: dg.RunStatusSensorContext, storage: StorageResource,
                       profile: ProfileResource) -> list[dg.RunRequest]:
    run_id = context.dagster_run.run_id
    missing = classes_without_synthetic(storage, profile, context.instance)
    if missing:
        context.log.info(f"GANs requested for {missing}")
        return [dg.RunRequest(job_name=gan_job.name, partition_key=c, run_key=f"gans-{c}-{run_id}",
                              tags={"reason": f"no synthetic set after prepare {run_id[:8]}"}) for c in missing]
    return [dg.RunRequest(job_name=classifier_job.name, run_key=f"classifier-{run_id}",
                          tags={"reason": f"prepare {run_id[:8]} succeeded"})]


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[gan_job],
                      request_job=classifier_job, default_status=dg.DefaultSensorStatus.RUNNING,
                      description="After the last GAN run: the classifier, retrained on every class.")
def classifier_after_gans(context: dg.RunStatusSensorContext, storage: StorageResource,
                          profile: ProfileResource) -> dg.RunRequest | dg.SkipReason:
    missing = classes_without_synthetic(storage, profile, context.instance)
    in_flight = context.instance.get_runs(filters=dg.RunsFilter(
        job_name=gan_job.name, statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                                         dg.DagsterRunStatus.STARTED]))
    if missing or in_flight:
        return dg.SkipReason(f"waiting: classes without a synthetic set {missing}, "
                             f"{len(in_flight)} gans runs in flight")
    run_id = context.dagster_run.run_id
    return dg.RunRequest(run_key=f"classifier-after-{run_id}", tags={"reason": f"gans {run_id[:8]} succeeded"})
