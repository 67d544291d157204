"""Sensor: the capture root decides. A new class folder adds a defect-class partition (its
GAN trains, then the classifier retrains with the new class count); new captures in known
classes request a retrain. Nothing in code names a class."""

import dagster as dg

from pipelines.jobs import prepare_job
from pipelines.partitions import defect_classes
from pipelines.resources import CaptureDataResource, ProfileResource


@dg.sensor(job=prepare_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Watches the capture root for new defect classes and new captures.")
def captures_sensor(context: dg.SensorEvaluationContext, captures: CaptureDataResource,
                    profile: ProfileResource) -> dg.SensorResult:
    clean = profile.get().clean_class
    defects = [c for c in captures.class_folders() if c != clean]
    known = set(context.instance.get_dynamic_partitions(defect_classes.name))
    new = [c for c in defects if c not in known]
    version = captures.version()
    requests = []
    if new or version != context.cursor:
        reason = f"new defect classes {new}" if new else "new captures"
        requests.append(dg.RunRequest(run_key=f"prepare-{version}-{'-'.join(new)}",
                                      tags={"data_version": version, "reason": reason}))
        context.log.info(f"{reason}: data version {version}")
    return dg.SensorResult(
        run_requests=requests, cursor=version,
        dynamic_partitions_requests=[defect_classes.build_add_request(new)] if new else [])
