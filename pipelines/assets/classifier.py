"""Assets: P-GAN training set -> CV classifiers -> test report -> ONNX (-> gated int8) -> registered model."""

import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from pipelines.assets.common import counts_table, run_tags
from pipelines.assets.data import patch_sets
from pipelines.assets.gans import GAN_KIND, synthetic_sets
from pipelines.resources import (
    CaptureDataResource,
    MlflowResource,
    ProfileResource,
    QualityGatesResource,
    StorageResource,
)
from smh_ml.datasets import load_patch_set, load_training_set
from smh_ml.experiments import held_out_test, load_classifier, save_classifier, test_set_id, write_test_figures
from smh_ml.export import check_parity, export_onnx
from smh_ml.io import atomic_dir, save_npy
from smh_ml.quantization import gated_int8
from smh_ml.serving import package_mlflow_model
from smh_ml.synthetic import build_pgan, defect_classes, read_synthetic
from smh_ml.training import class_names, cross_validate, test_patches, train_final

ACCURACY_CHECK = "test_accuracy_floor"
PARITY_CHECK = "onnx_parity"


@dg.asset(deps=[patch_sets, synthetic_sets], group_name="classifier",
          automation_condition=dg.AutomationCondition.eager(),
          description="P-GAN: real TRAIN patches plus each defect class's synthetic patches.")
def training_set(context: dg.AssetExecutionContext, profile: ProfileResource,
                 storage: StorageResource) -> dg.MaterializeResult:
    prof = profile.get()
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    gan_dir = storage.path(prof.name, "gans", GAN_KIND)
    classes = defect_classes(patch_set, prof.clean_class)
    synthetic = {c: read_synthetic(gan_dir / c / "synthetic") for c in classes
                 if (gan_dir / c / "synthetic" / "index.csv").exists()}
    missing = sorted(set(classes) - set(synthetic))
    if missing:
        context.log.warning(f"no synthetic patches yet for {missing}: trained on their real patches only")
    pgan = build_pgan(patch_set, synthetic, prof)
    out = storage.path(prof.name, "training_set")
    with atomic_dir(out) as tmp:
        (tmp / "pgan").mkdir()
        save_npy(tmp / "pgan" / "arrays.npy", pgan.arrays)
        pgan.index.to_csv(tmp / "pgan" / "index.csv", index=False)
    counts = pgan.index.groupby(["label", "origin"]).size().unstack(fill_value=0)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)), "patches": len(pgan.index),
        "per_class": dg.MetadataValue.md(f"```\n{counts.to_string()}\n```"),
        "classes_without_gan": missing})


@dg.asset(deps=[training_set], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          description="k-fold CV (grouped by capture, scored on all and on real patches), then the "
                      "final model trained on the whole training set.")
def cv_classifiers(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                   captures: CaptureDataResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    prof = profile.get()
    cfg = prof.train
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    train = load_training_set(storage.path(prof.name, "training_set"), "pgan")
    names = class_names(set(patch_set.captures["label"]), prof.clean_class)
    tags = run_tags(prof.name, captures.version())
    cv = cross_validate(train.arrays, train.index, names, cfg, patch_set.geometry.patch)
    client = mlflow.client()
    for fold in cv["folds"]:
        with mlflow.nested_run(context, f"cv-fold-{fold['fold']}", tags | {"fold": str(fold["fold"])},
                               {"arch": cfg.arch, "epochs": cfg.epochs, "k": cfg.cv_folds}) as run_id:
            for part in ("all", "real_only"):
                client.log_metric(run_id, f"{part}_accuracy", fold[part]["accuracy"])
                for name, m in fold[part]["per_class"].items():
                    client.log_metric(run_id, f"{part}_f1_{name}", m["f1"])
            client.log_dict(run_id, fold["all"]["confusion_matrix"], "confusion_matrix.json")
    final = train_final(train.arrays, train.index, names, cfg, patch_set.geometry.patch)
    report = {"arch": cfg.arch, "classes": names, "geometry": patch_set.geometry.to_dict(),
              "cv": {k: v for k, v in cv.items() if k != "folds"},
              "folds": [{k: v for k, v in f.items() if k != "history"} for f in cv["folds"]],
              "final_history": final.history, "train_size": len(train.arrays)}
    out = save_classifier(storage.path(prof.name, "classifier"), final.model, report)
    summary = cv["summary"]
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)), "k": cv["k"],
        "cv_accuracy_mean": summary["all"]["mean_accuracy"], "cv_accuracy_std": summary["all"]["std_accuracy"],
        "cv_real_only_accuracy_mean": summary["real_only"]["mean_accuracy"],
        "fold_accuracies": dg.MetadataValue.json(summary)})


@dg.asset(deps=[cv_classifiers], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(ACCURACY_CHECK, asset="test_report", blocking=True,
                                         description="Held-out image accuracy reaches the floor")],
          description="Algorithm 1 on the held-out ORIGINAL captures: accuracy, per-class P/R/F1, "
                      "confusion matrix, misses-vs-false-alarms curve.")
def test_report(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                captures: CaptureDataResource, mlflow: MlflowResource, gates: QualityGatesResource):
    prof = profile.get()
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    model, trained = load_classifier(storage.path(prof.name, "classifier"))
    names = trained["classes"]
    metrics, curve = held_out_test(model, patch_set, names)
    report = metrics | {"test_set_id": test_set_id(patch_set), "classes": names}
    out = storage.path(prof.name, "test_report")
    with atomic_dir(out) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        write_test_figures(tmp, metrics, curve, names, trained["arch"])
    with mlflow.nested_run(context, "test", run_tags(prof.name, captures.version()),
                           {"test_set_id": report["test_set_id"], "test_captures": metrics["n"]}) as run_id:
        client = mlflow.client()
        client.log_metric(run_id, "test_accuracy", metrics["accuracy"])
        for name, m in metrics["per_class"].items():
            for key in ("precision", "recall", "f1"):
                client.log_metric(run_id, f"test_{key}_{name}", m[key])
        client.log_artifacts(run_id, str(out), "test_report")
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)), "test_accuracy": metrics["accuracy"],
        "test_captures": metrics["n"], "test_set_id": report["test_set_id"],
        "f1": counts_table({k: round(v["f1"], 4) for k, v in metrics["per_class"].items()}),
        "confusion_matrix": dg.MetadataValue.path(str(out / "confusion_matrix.png")),
        "mlflow_run": mlflow.run_link(run_id)})
    yield dg.AssetCheckResult(check_name=ACCURACY_CHECK, passed=metrics["accuracy"] >= gates.accuracy_floor,
                              metadata={"accuracy": metrics["accuracy"], "floor": gates.accuracy_floor})


@dg.asset(deps=[test_report], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(PARITY_CHECK, asset="onnx_model", blocking=True,
                                         description="ONNX vs torch probabilities on real test patches")],
          description="Self-contained ONNX file (dynamic batch, class names and geometry in metadata).")
def onnx_model(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
               gates: QualityGatesResource):
    prof = profile.get()
    model, trained = load_classifier(storage.path(prof.name, "classifier"))
    test = json.loads((storage.path(prof.name, "test_report") / "report.json").read_text())
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    _, groups = test_patches(patch_set)
    sample = np.concatenate(groups)[:512]
    path = storage.path(prof.name, "onnx", "model.onnx")
    path.with_name("model.int8.onnx").unlink(missing_ok=True)  # it belonged to the previous fp32 model
    export_onnx(model, path, trained["geometry"]["patch"], trained["classes"], trained["geometry"],
                {"arch": trained["arch"], "profile": prof.name, "test_accuracy": test["accuracy"],
                 "test_set_id": test["test_set_id"]})
    try:
        diff, passed = check_parity(model, path, sample, gates.parity_tolerance), True
    except AssertionError as exc:
        context.log.error(str(exc))
        diff, passed = float("nan"), False
    yield dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path)),
                                         "size_mb": round(path.stat().st_size / 2**20, 2)})
    yield dg.AssetCheckResult(check_name=PARITY_CHECK, passed=passed,
                              metadata={"max_abs_diff": diff, "tolerance": gates.parity_tolerance,
                                        "patches": len(sample)})


@dg.asset(deps=[onnx_model], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          description="int8 static quantization of the ONNX model, kept (onnx/model.int8.onnx) only when its "
                      "held-out accuracy is within the profile's deploy.int8_tolerance of fp32.")
def int8_model(context: dg.AssetExecutionContext, profile: ProfileResource,
               storage: StorageResource) -> dg.MaterializeResult:
    prof = profile.get()
    cfg = prof.deploy
    report = gated_int8(storage.path(prof.name, "onnx", "model.onnx"),
                        load_patch_set(storage.path(prof.name, "patch_sets")), prof.clean_class,
                        cfg.int8_tolerance, cfg.calibration_patches, cfg.per_channel)
    if not report.accepted:
        context.log.warning(f"int8 refused: held-out accuracy {report.int8_accuracy:.4f} vs fp32 "
                            f"{report.fp32_accuracy:.4f} (tolerance {report.tolerance:g}); fp32 only")
    return dg.MaterializeResult(metadata={
        "accepted": report.accepted, "fp32_accuracy": report.fp32_accuracy, "int8_accuracy": report.int8_accuracy,
        "drop": report.drop, "tolerance": report.tolerance, "test_images": report.test_images,
        "path": report.int8_path or "none (refused)"})


@dg.asset(deps=[onnx_model, int8_model], group_name="classifier",
          automation_condition=dg.AutomationCondition.eager(),
          description="The ONNX model (onnx + pyfunc flavours) registered in MLflow: alias "
                      "'challenger'; 'champion' only when at least as accurate on the same test captures.")
def registered_model(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                     captures: CaptureDataResource, mlflow: MlflowResource,
                     gates: QualityGatesResource) -> dg.MaterializeResult:
    prof = profile.get()
    test = json.loads((storage.path(prof.name, "test_report") / "report.json").read_text())
    with tempfile.TemporaryDirectory() as tmp, \
            mlflow.nested_run(context, "registration", run_tags(prof.name, captures.version()),
                              {"profile": prof.name}) as run_id:
        fp32 = storage.path(prof.name, "onnx", "model.onnx")
        int8 = fp32.with_name("model.int8.onnx")
        model_dir = package_mlflow_model(fp32, Path(tmp) / "model", int8 if int8.is_file() else None)
        outcome = mlflow.register(run_id, model_dir, test["accuracy"], test["test_set_id"],
                                  gates.promotion_margin, {"profile": prof.name,
                                                           "data_version": captures.version()})
    return dg.MaterializeResult(metadata={
        "model": mlflow.model_name, "version": outcome["version"], "promoted": outcome["promote"],
        "int8_included": int8.is_file(),
        "reason": outcome["reason"], "challenger_accuracy": outcome["challenger_accuracy"],
        "champion_accuracy": "none" if outcome["champion_accuracy"] is None else outcome["champion_accuracy"],
        "champion_version": outcome["champion_version"], "mlflow_run": mlflow.run_link(run_id)})

