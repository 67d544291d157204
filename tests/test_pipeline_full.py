"""The whole graph on the ci profile: ephemeral Dagster instance, a real MLflow server on
loopback, the sensor, champion promotion, and `dagster dev` answering GraphQL."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import dagster as dg
import pytest
from conftest import free_port

from pipelines.assets import ALL_ASSETS, CLASSIFIER_ASSETS, DATA_ASSETS, GAN_ASSETS
from pipelines.partitions import defect_classes
from pipelines.resources import (
    CaptureDataResource,
    MlflowResource,
    ProfileResource,
    QualityGatesResource,
    StorageResource,
)
from pipelines.sensors import captures_sensor

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _resources(root, storage, tracking_uri, artifacts, floor=0.0, baseline_margin=0.02, settings=()):
    return {"profile": ProfileResource(name="ci", settings=list(settings)),
            "captures": CaptureDataResource(root=str(root)),
            "storage": StorageResource(root=str(storage)),
            "mlflow": MlflowResource(tracking_uri=tracking_uri, artifact_root=str(artifacts)),
            "gates": QualityGatesResource(accuracy_floor=floor, baseline_margin=baseline_margin)}


def test_whole_graph_with_a_real_mlflow_server(sim_root, tmp_path, mlflow_server):
    instance = dg.DagsterInstance.ephemeral()
    # 9 held-out captures of the tiny ci set: the graph's wiring is under test here, not the
    # ci model's skill, so the baseline margin is off (test_promotion... tests the baseline rule)
    resources = _resources(sim_root, tmp_path / "artifacts", mlflow_server, tmp_path / "unused",
                           baseline_margin=-1.0)
    assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=DATA_ASSETS).success
    classes = ["imprinted", "pits", "roll-marks", "scratches"]
    instance.add_dynamic_partitions(defect_classes.name, classes)
    for label in classes:
        result = dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=GAN_ASSETS,
                                partition_key=label)
        assert result.success
        [check] = result.get_asset_check_evaluations()
        # no absolute ceiling set: a GAN above the relative one is a warning, never a block
        assert check.check_name == "fid_within_ceiling"
        assert check.passed or check.severity == dg.AssetCheckSeverity.WARN
        assert "relative_ceiling" in check.metadata
    result = dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=CLASSIFIER_ASSETS)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"test_accuracy_floor": True, "onnx_parity": True}
    # a class whose patches passed the content checks goes on the validation trial, which the page reports
    training = [e for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "training_set"][0].materialization.metadata
    on_trial = "trial_admitted" in training
    assert (tmp_path / "artifacts" / "ci" / "training_set" / "trial.json").is_file() == on_trial
    assert training["trial"].value and (not on_trial or "validation captures" in training["trial"].value)
    if on_trial:  # the trial's fit of the chosen set is the first candidate's final fit, not fitted again
        trial = json.loads((tmp_path / "artifacts" / "ci" / "training_set" / "trial.json").read_text())
        first = json.loads((tmp_path / "artifacts" / "ci" / "classifier" / trial["arch"] / "report.json").read_text())
        chosen = tmp_path / "artifacts" / "ci" / "training_set" / "trial" / ("with" if trial["admitted"] else "without")
        assert first["reused_fit"] == str(chosen)
        assert first["fit"] == json.loads((chosen / "report.json").read_text())["fit"]
    registered = [e for e in result.get_asset_materialization_events()
                  if e.asset_key.to_user_string() == "registered_model"][0]
    meta = registered.materialization.metadata
    # every candidate registered; the best one last (so it holds the challenger alias) and promoted
    assert sorted(meta["versions"].value.values()) == [1, 2] and meta["version"].value == 2
    assert meta["promoted"].value is True and meta["best"].value in ("inception_cnn", "baseline_cnn")
    int8 = [e for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "int8_model"][0].materialization.metadata
    robustness = [e for e in result.get_asset_materialization_events()
                  if e.asset_key.to_user_string() == "robustness_report"][0].materialization.metadata
    assert robustness["arch"].value == meta["best"].value and "blur" in robustness["accuracy"].value
    assert meta["int8_included"].value is int8["accepted"].value  # int8 ships only when it passed the gate
    assert int8["accepted"].value is (int8["drop"].value <= int8["tolerance"].value + 1e-12)
    # both precision verdicts (validation captures) travel in the card of the model that is registered
    from smh_ml.deploy.runtime import read_card

    card = read_card(tmp_path / "artifacts" / "ci" / "classifier" / meta["best"].value / "model.onnx")
    assert set(card.fast_paths) == {"int8", "openvino-bf16"}
    assert card.fast_paths["int8"]["split"] == "validation" == card.fast_paths["openvino-bf16"]["split"]
    assert card.accepts("openvino-bf16") is int8["bf16_accepted"].value

    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias("smh-defect-classifier", "champion")
    assert int(champion.version) == 2 and "test_set_id" in champion.tags
    assert champion.tags["arch"] == meta["best"].value
    runs = client.search_runs([client.get_experiment_by_name("smh-defect-recognition").experiment_id])
    roles = {r.data.tags.get("role") for r in runs}
    assert {"parent", "domain_extractor", "gan-pits", "train-inception_cnn", "train-baseline_cnn",
            "test-inception_cnn", "test-baseline_cnn", "registration-inception_cnn",
            "registration-baseline_cnn"} <= roles
    assert ("synthetic-trial" in roles) == on_trial
    train_run = next(r for r in runs if r.data.tags.get("role") == "train-inception_cnn")
    assert {"loss", "val_accuracy", "val_auroc", "patches_per_second"} <= set(train_run.data.metrics)
    gan_run = next(r for r in runs if r.data.tags.get("role") == "gan-pits")
    assert "domain_fid" in gan_run.data.metrics and "critic_loss" in gan_run.data.metrics


def _registry(tmp_path):
    """A packaged (untrained) model and the tracker of an MLflow resource on a fresh sqlite store."""
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.tracking.packaging import package_model

    onnx_path = export_onnx(build("baseline_cnn", 3, 16).eval(), tmp_path / "m.onnx",
                            ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(rows=4, cols=2, patch=16)))
    package = package_model(onnx_path, tmp_path / "pkg")
    tracker = MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                             artifact_root=str(tmp_path / "arts")).tracker()
    return package, tracker, tracker.client()


def test_promotion_moves_champion_only_for_a_better_model(tmp_path):
    import numpy as np

    package, mlflow, client = _registry(tmp_path)

    def register(accuracy, test_set="t1"):
        run = client.create_run(mlflow.experiment_id()).info.run_id
        return mlflow.register(run, package, accuracy, test_set, 0.0, {})

    first = register(0.80)
    assert first["promote"] and first["champion_version"] == 1
    worse = register(0.70)
    assert not worse["promote"] and worse["champion_version"] == 1
    champion = client.get_model_version_by_alias(mlflow.model_name, "champion")
    assert int(champion.version) == 1
    assert int(client.get_model_version_by_alias(mlflow.model_name, "challenger").version) == 2
    other_set = register(0.99, test_set="t2")  # not comparable: other test captures
    assert not other_set["promote"]
    better = register(0.85)
    assert better["promote"] and int(client.get_model_version_by_alias(mlflow.model_name, "champion").version) == 4
    recorded = json.loads(client.get_model_version(mlflow.model_name, "2").tags["promotion"])
    assert recorded["champion_accuracy"] == 0.80 and recorded["challenger_accuracy"] == 0.70
    assert np.isfinite(better["challenger_accuracy"])


def test_a_trivial_model_is_never_promoted(tmp_path):
    """No champion yet, and still a model at the majority-class baseline is not promoted."""
    package, mlflow, client = _registry(tmp_path)
    run = client.create_run(mlflow.experiment_id()).info.run_id
    trivial = mlflow.register(run, package, 0.709, "t1", 0.0, {}, baseline=0.709, baseline_margin=0.02)
    assert not trivial["promote"] and "trivial baseline" in trivial["reason"]
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(mlflow.model_name, "champion")
    run = client.create_run(mlflow.experiment_id()).info.run_id
    useful = mlflow.register(run, package, 0.95, "t1", 0.0, {}, baseline=0.709, baseline_margin=0.02)
    assert useful["promote"] and int(client.get_model_version_by_alias(mlflow.model_name, "champion").version) == 2


def test_sensor_adds_a_partition_for_a_new_defect_class(sim_root, tmp_path):
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"captures": CaptureDataResource(root=str(root), dvc_file=str(tmp_path / "none.dvc")),
                 "profile": ProfileResource(name="ci")}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        first = captures_sensor(context)
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [
        ["imprinted", "pits", "roll-marks", "scratches"]]
    assert len(first.run_requests) == 1
    instance.add_dynamic_partitions(defect_classes.name, ["imprinted", "pits", "roll-marks", "scratches"])
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as context:
        quiet = captures_sensor(context)
    assert quiet.run_requests == [] and quiet.dynamic_partitions_requests == []
    (root / "dents").mkdir()  # a new defect type arrives: a folder, no code change
    shutil.copy(next((root / "pits").glob("*.jpg")), root / "dents" / "d1.jpg")
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor) as context:
        new = captures_sensor(context)
    assert [list(r.partition_keys) for r in new.dynamic_partitions_requests] == [["dents"]]
    assert len(new.run_requests) == 1 and "dents" in new.run_requests[0].tags["reason"]
    (root / "pits" / "extra.jpg").write_bytes((root / "dents" / "d1.jpg").read_bytes())
    instance.add_dynamic_partitions(defect_classes.name, ["dents"])
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=new.cursor) as context:
        more = captures_sensor(context)
    assert len(more.run_requests) == 1 and more.run_requests[0].tags["reason"] == "new captures"


def test_dagster_dev_lists_the_assets_over_graphql(tmp_path, sim_root):
    from conftest import REPO

    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {"DAGSTER_HOME": str(home), "SMH_PROFILE": "ci", "SMH_DATA_ROOT": str(sim_root),
                        "SMH_STORAGE_ROOT": str(tmp_path / "artifacts")}
    proc = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml"),
                             "-p", str(port), "-h", "127.0.0.1"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        query = json.dumps({"query": "{ assetNodes { assetKey { path } } }"}).encode()
        deadline, names = time.time() + 150, set()
        while time.time() < deadline and "registered_model" not in names:
            try:
                request = urllib.request.Request(url, query, {"Content-Type": "application/json"})
                data = json.load(urllib.request.urlopen(request, timeout=5))
                names = {"/".join(n["assetKey"]["path"]) for n in data["data"]["assetNodes"]}
            except (OSError, KeyError, TypeError):
                time.sleep(1)
        assert {"raw_captures", "capture_manifest", "patch_sets", "gan_models", "synthetic_sets",
                "training_set", "cv_classifiers", "test_report", "onnx_model", "int8_model",
                "robustness_report", "registered_model"} <= names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_capture_set_without_clean_captures_runs_through_the_graph(sim_root, tmp_path):
    """A defect-only set (masks, no defect-free folder) passes the data checks, trains, and
    reaches the held-out test with the defect classes only, decided by arg-max. The ci
    model's skill is not under test: its accuracy check may fail, the report must exist.
    Trained within a minute budget: the candidate is chosen on validation captures and only
    the chosen one is cross-validated, with the budget left."""
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root, ignore=shutil.ignore_patterns("defect-free"))
    instance = dg.DagsterInstance.ephemeral()
    resources = _resources(root, tmp_path / "artifacts", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "mlruns",
                           baseline_margin=-1.0, settings=["train.budget_minutes=1"])
    data = dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=DATA_ASSETS)
    assert data.success
    classes = ["imprinted", "pits", "roll-marks", "scratches"]
    instance.add_dynamic_partitions(defect_classes.name, classes)
    for label in classes:
        assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=GAN_ASSETS,
                              partition_key=label).success
    dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=CLASSIFIER_ASSETS,
                   raise_on_error=False)
    folder = tmp_path / "artifacts" / resources["profile"].get().name  # ci+train.budget_minutes=1.0
    report = json.loads((folder / "test_report" / "report.json").read_text())
    best = report["candidates"][report["best"]]
    assert best["image"]["clean_images"] == 0 and best["n"] > 0 and best["rule"] != "threshold"
    assert report["classes"][0] == "defect-free" and set(classes) <= set(report["classes"])
    chosen = json.loads((folder / "classifier" / "selection.json").read_text())
    assert chosen["selection"]["best"] == report["best"] == report["selection"]["best"]
    assert chosen["selection"]["metric"] == "validation image accuracy" and chosen["budget"]["budget_minutes"] == 1
    others = [arch for arch in chosen["candidates"] if arch != report["best"]]
    assert all(json.loads((folder / "classifier" / arch / "report.json").read_text())["cv"] is None
               for arch in others)


def test_the_training_set_asset_tries_a_class_refused_for_its_fid_alone(sim_root, tmp_path):
    """The validation trial inside Dagster: the verdict and both validation accuracies on the
    training_set page, trial.json beside P-GAN, a synthetic-trial MLflow run, and P-GAN
    holding the class's GAN patches exactly when the trial admitted them."""
    from mlflow import MlflowClient
    from pipelines.assets.classifier import training_set
    from smh_ml.data.datasets import load_training_set

    instance = dg.DagsterInstance.ephemeral()
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    resources = _resources(sim_root, tmp_path / "artifacts", tracking, tmp_path / "mlruns")
    assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=DATA_ASSETS).success
    classes = ["imprinted", "pits", "roll-marks", "scratches"]
    instance.add_dynamic_partitions(defect_classes.name, classes)
    for label in classes:
        assert dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=GAN_ASSETS,
                              partition_key=label).success
    gate_file = tmp_path / "artifacts" / "ci" / "gans" / "sdg" / "pits" / "synthetic" / "gate.json"
    # whatever the ci GAN drew, its verdict is made "refused for its FID alone"
    gate = json.loads(gate_file.read_text()) | {"refused": True, "content_passed": True,
                                                 "reasons": ["FID 9.00 above the ceiling 1.00"]}
    gate_file.write_text(json.dumps(gate))
    result = dg.materialize(ALL_ASSETS, instance=instance, resources=resources, selection=[training_set])
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    from smh_ml.config.presets import get_profile
    from smh_ml.workflows.trial import on_trial

    gans = tmp_path / "artifacts" / "ci" / "gans" / "sdg"
    assert "validation captures" in meta["trial"].value
    assert "pits" in meta["trial_classes"].value
    assert meta["trial_classes"].value == on_trial(gans, classes, get_profile("ci").gan)
    admitted = meta["trial_admitted"].value
    assert 0.0 <= meta["val_accuracy_without"].value <= 1.0 and 0.0 <= meta["val_accuracy_with"].value <= 1.0
    out = tmp_path / "artifacts" / "ci" / "training_set"
    assert json.loads((out / "trial.json").read_text())["admitted"] is admitted
    pgan = load_training_set(out, "pgan").index
    assert ((pgan["origin"] == "synthetic") & (pgan["label"] == "pits")).any() == admitted
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("smh-defect-recognition").experiment_id])
    trial_run = next(r for r in runs if r.data.tags.get("role") == "synthetic-trial")
    assert trial_run.data.metrics["admitted"] == float(admitted) and trial_run.data.params["classes"] == "pits"
