"""Retraining that runs by itself, driven by the project's real sensors and jobs (ci profile):
a new class folder under the capture root leads to that class's GAN and synthetic set, a
classifier retrained with one more class, new registered versions and a promotion decision.
Each sensor is evaluated with Dagster's test contexts exactly as the daemon would call it, and
each run it requests is executed as the job it names."""

import json
import shutil

import dagster as dg
import onnx
import pytest
from PIL import Image

from pipelines.assets import ALL_ASSETS
from pipelines.jobs import JOBS
from pipelines.resources import (
    CaptureDataResource,
    MlflowResource,
    ProfileResource,
    QualityGatesResource,
    StorageResource,
)
from pipelines.sensors import captures_sensor, classifier_after_gans, gans_after_prepare

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


class Daemon:
    """Plays the daemon's part: evaluates sensors and executes the runs they request."""

    def __init__(self, tmp_path, root):
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources = {
            "profile": ProfileResource(name="ci"),
            "captures": CaptureDataResource(root=str(root), dvc_file=str(tmp_path / "none.dvc")),
            "storage": StorageResource(root=str(tmp_path / "artifacts")),
            "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                     artifact_root=str(tmp_path / "mlruns")),
            # the wiring is under test, not the tiny ci model's skill (test_promotion tests the rule)
            "gates": QualityGatesResource(baseline_margin=-1.0)}
        self.defs = dg.Definitions(assets=ALL_ASSETS, jobs=JOBS, resources=self.resources)
        self.cursor = None
        self.runs: list[tuple[str, str | None]] = []

    def execute(self, request: dg.RunRequest, job_name: str) -> dg.DagsterRun:
        job = self.defs.resolve_job_def(request.job_name or job_name)
        result = job.execute_in_process(instance=self.instance, partition_key=request.partition_key,
                                        tags=request.tags, raise_on_error=True)
        self.runs.append((job.name, request.partition_key))
        return result.dagster_run

    def after(self, sensor, run: dg.DagsterRun):
        event = next(e for e in self.instance.all_logs(run.run_id)
                     if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS").dagster_event
        with dg.build_run_status_sensor_context(sensor_name=sensor.name, dagster_instance=self.instance,
                                                dagster_run=run, dagster_event=event,
                                                resources=self.resources) as context:
            return sensor(context)

    def tick(self) -> None:
        """One captures_sensor tick, then every run the chain of sensors asks for."""
        with dg.build_sensor_context(instance=self.instance, resources=self.resources, cursor=self.cursor) as ctx:
            result = captures_sensor(ctx)
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.cursor = result.cursor
        for request in result.run_requests:
            prepared = self.execute(request, "prepare")
            for follow in self.after(gans_after_prepare, prepared):
                run = self.execute(follow, "")
                if run.job_name == "gans":
                    nxt = self.after(classifier_after_gans, run)
                    if isinstance(nxt, dg.RunRequest):
                        self.execute(nxt, "classifier")


def _classes_of_version(tracker, version: int) -> list[str]:
    from smh_ml.tracking.tracker import resolve_model

    path = resolve_model(f"models:/{tracker.model_name}/{version}", uri=tracker.uri,
                         cache=tracker.artifact_root + "-cache")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(meta["class_names"])


def test_a_new_class_folder_retrains_to_a_version_with_one_more_class(sim_root, tmp_path):
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root)
    daemon = Daemon(tmp_path, root)
    tracker = daemon.resources["mlflow"].tracker()
    client = tracker.client()

    daemon.tick()  # first start: everything is new
    assert daemon.runs == [("prepare", None), *[("gans", c) for c in
                                        ["imprinted", "pits", "roll-marks", "scratches"]], ("classifier", None)]
    first = max(int(v.version) for v in client.search_model_versions(f"name='{tracker.model_name}'"))
    assert len(_classes_of_version(tracker, first)) == 5

    daemon.runs.clear()
    daemon.tick()  # nothing changed: nothing runs
    assert daemon.runs == []

    (root / "dents").mkdir()  # a new defect type arrives: a folder of captures, no code change
    for i, image in enumerate(sorted((root / "pits").glob("*.jpg"))[:8]):  # new content: mirrored pits
        for source, name in ((image, f"dent-{i}.jpg"), (image.with_suffix(".mask.png"), f"dent-{i}.mask.png")):
            Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "dents" / name)
    daemon.tick()
    # only the new class's GAN trains; the classifier retrains once, after it
    assert daemon.runs == [("prepare", None), ("gans", "dents"), ("classifier", None)]
    versions = client.search_model_versions(f"name='{tracker.model_name}'")
    newest = max(int(v.version) for v in versions)
    assert newest > first
    classes = _classes_of_version(tracker, newest)
    assert len(classes) == 6 and "dents" in classes
    decided = json.loads(client.get_model_version(tracker.model_name, str(newest)).tags["promotion"])
    # the 5-class champion was re-tested on the new held-out captures, so promotion decided on
    # the same captures (not "promote by hand"); the decision and both scores are recorded
    assert decided["champion_retested"] is True and "other captures" not in decided["reason"]
    assert decided["champion_accuracy"] is not None and decided["challenger_accuracy"] is not None


def test_a_class_whose_gan_run_was_killed_gets_its_gan_run_again(sim_root, tmp_path):
    """A synthetic set missing (killed between gan_models and synthetic_sets) is an error in
    training_set, and the next prepare requests that class's GAN again."""
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root)
    daemon = Daemon(tmp_path, root)
    daemon.tick()
    missing = daemon.resources["storage"].path("ci", "gans", "sdg", "pits", "synthetic")
    shutil.rmtree(missing)
    job = daemon.defs.resolve_job_def("classifier")
    failed = job.execute_in_process(instance=daemon.instance, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "pits" in str(failure.event_specific_data.error) and failure.step_key == "training_set"
    daemon.runs.clear()
    prepared = daemon.execute(dg.RunRequest(), "prepare")
    assert [(r.job_name, r.partition_key) for r in daemon.after(gans_after_prepare, prepared)] == [("gans", "pits")]
