"""Assets: P-GAN training set -> CV classifiers -> test report -> ONNX (-> gated int8) -> registered model."""

import dataclasses
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
from smh_ml.experiments import (
    export_metadata,
    held_out_test,
    load_classifier,
    save_classifier,
    test_set_id,
    train_candidate,
    write_test_figures,
)
from smh_ml.export import check_parity, export_onnx
from smh_ml.io import atomic_dir, save_npy
from smh_ml.promotion import accuracy_floor, best_candidate, passes_floor
from smh_ml.quantization import gated_int8
from smh_ml.serving import package_mlflow_model
from smh_ml.synthetic import build_pgan, defect_classes, read_synthetic
from smh_ml.training import class_names, test_patches

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
          description="For each candidate architecture of the profile: k-fold CV (grouped by capture), then "
                      "the final model (best checkpoint on a validation split of the training captures) "
                      "and its decision threshold calibrated on that split.")
def cv_classifiers(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                   captures: CaptureDataResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    prof = profile.get()
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    train = load_training_set(storage.path(prof.name, "training_set"), "pgan")
    names = class_names(set(patch_set.captures["label"]), prof.clean_class)
    tags = run_tags(prof.name, captures.version())
    client = mlflow.client()
    summary = {}
    for arch in prof.train.architectures():
        cfg = dataclasses.replace(prof.train, arch=arch)
        report = train_candidate(patch_set, train, names, prof, cfg)
        save_classifier(storage.path(prof.name, "classifier", arch), report.pop("model"), report)
        with mlflow.nested_run(context, f"train-{arch}", tags | {"arch": arch},
                               {k: v for k, v in dataclasses.asdict(cfg).items()} | report["fit"]) as run_id:
            for record in report["final_history"]:
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)):
                        client.log_metric(run_id, key, value, step=record["step"])
            for key in ("patches_per_second", "train_seconds"):
                client.log_metric(run_id, key, report["fit"][key])
            if report["decision"]["threshold"] is not None:
                client.log_metric(run_id, "threshold", report["decision"]["threshold"])
            for fold in report.get("folds", []):
                for part in ("all", "real_only"):
                    client.log_metric(run_id, f"cv_{part}_accuracy", fold[part]["accuracy"], step=fold["fold"])
            client.log_dict(run_id, report, "train_report.json")
        summary[arch] = {"cv_accuracy": report.get("cv", {}).get("summary", {}).get("all", {}).get("mean_accuracy"),
                         "val_threshold": report["decision"]["threshold"], **report["fit"]}
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(storage.path(prof.name, "classifier"))),
        "candidates": dg.MetadataValue.json(summary)})


@dg.asset(deps=[cv_classifiers], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(ACCURACY_CHECK, asset="test_report", blocking=True,
                                         description="The best candidate's held-out accuracy is above the trivial "
                                                     "baseline (always the majority class) + margin, and the floor")],
          description="Each candidate on the same held-out ORIGINAL captures: the calibrated threshold rule and "
                      "the paper's arg-max Algorithm 1, AUROC, recall at the false-alarm target, per-class "
                      "P/R/F1, confusion matrix; the best candidate is named.")
def test_report(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                captures: CaptureDataResource, mlflow: MlflowResource, gates: QualityGatesResource):
    prof = profile.get()
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    test = test_patches(patch_set)
    out = storage.path(prof.name, "test_report")
    candidates, parameters = {}, {}
    with atomic_dir(out) as tmp:
        for arch in prof.train.architectures():
            model, trained = load_classifier(storage.path(prof.name, "classifier", arch))
            names = trained["classes"]
            metrics, curve = held_out_test(model, patch_set, names, test, trained["decision"]["threshold"])
            (tmp / arch).mkdir()
            write_test_figures(tmp / arch, metrics, curve, names, arch)
            candidates[arch] = metrics
            parameters[arch] = trained["parameters"]
        best = best_candidate({a: m["accuracy"] for a, m in candidates.items()}, parameters)
        baseline = candidates[best]["image"]["majority_baseline"]
        report = {"best": best, "accuracy": candidates[best]["accuracy"], "majority_baseline": baseline,
                  "test_set_id": test_set_id(patch_set), "classes": names, "candidates": candidates,
                  "parameters": parameters}
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    runs = {}
    for arch, metrics in candidates.items():
        with mlflow.nested_run(context, f"test-{arch}", run_tags(prof.name, captures.version()) | {"arch": arch},
                               {"test_set_id": report["test_set_id"], "test_captures": metrics["n"],
                                "rule": metrics["rule"]}) as run_id:
            client = mlflow.client()
            client.log_metric(run_id, "test_accuracy", metrics["accuracy"])
            client.log_metric(run_id, "test_accuracy_argmax", metrics.get("argmax", metrics)["accuracy"])
            client.log_metric(run_id, "majority_baseline", baseline)
            for key in ("auroc", "defect_recall", "false_alarm_rate"):
                if key in metrics["image"]:
                    client.log_metric(run_id, f"test_{key}", metrics["image"][key])
            for name, m in metrics["per_class"].items():
                for key in ("precision", "recall", "f1"):
                    client.log_metric(run_id, f"test_{key}_{name}", m[key])
            client.log_artifacts(run_id, str(out / arch), "test_report")
            runs[arch] = mlflow.run_link(run_id)
    floor = accuracy_floor(baseline, gates.baseline_margin, gates.accuracy_floor)
    table = "\n".join(f"| {a} | {m['accuracy']:.4f} | {m.get('argmax', m)['accuracy']:.4f} | "
                      f"{m['image']['auroc']:.4f} | {m['image'].get('defect_recall', float('nan')):.4f} | "
                      f"{m['image'].get('false_alarm_rate', float('nan')):.4f} |" for a, m in candidates.items())
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)), "best": best, "test_accuracy": report["accuracy"],
        "majority_baseline": baseline, "test_captures": candidates[best]["n"], "test_set_id": report["test_set_id"],
        "candidates": dg.MetadataValue.md("| arch | accuracy (threshold) | accuracy (arg-max) | AUROC | defect recall "
                                          "| false alarms |\n|---|---|---|---|---|---|\n" + table),
        "f1": counts_table({k: round(v["f1"], 4) for k, v in candidates[best]["per_class"].items()}),
        "confusion_matrix": dg.MetadataValue.path(str(out / best / "confusion_matrix.png")),
        "mlflow_runs": dg.MetadataValue.json(runs)})
    yield dg.AssetCheckResult(check_name=ACCURACY_CHECK, passed=passes_floor(report["accuracy"], floor),
                              metadata={"accuracy": report["accuracy"], "floor": floor, "majority_baseline": baseline,
                                        "baseline_margin": gates.baseline_margin, "best": best})


@dg.asset(deps=[test_report], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(PARITY_CHECK, asset="onnx_model", blocking=True,
                                         description="ONNX vs torch probabilities on real test patches")],
          description="One self-contained ONNX file per candidate (dynamic batch; class names, geometry, "
                      "background level and the calibrated threshold in its metadata).")
def onnx_model(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
               gates: QualityGatesResource):
    prof = profile.get()
    test = json.loads((storage.path(prof.name, "test_report") / "report.json").read_text())
    patch_set = load_patch_set(storage.path(prof.name, "patch_sets"))
    _, groups = test_patches(patch_set)
    sample = np.concatenate(groups)[:512]
    diffs, failed = {}, []
    for arch in test["candidates"]:
        model, trained = load_classifier(storage.path(prof.name, "classifier", arch))
        path = storage.path(prof.name, "onnx", arch, "model.onnx")
        path.with_name("model.int8.onnx").unlink(missing_ok=True)  # it belonged to the previous fp32 model
        export_onnx(model, path, trained["geometry"]["patch"], trained["classes"], trained["geometry"],
                    export_metadata(trained, test["candidates"][arch]["accuracy"], test_set_id=test["test_set_id"]))
        try:
            diffs[arch] = check_parity(model, path, sample, gates.parity_tolerance)
        except AssertionError as exc:
            context.log.error(str(exc))
            diffs[arch], failed = float("nan"), [*failed, arch]
    best_path = storage.path(prof.name, "onnx", test["best"], "model.onnx")
    yield dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(best_path)), "best": test["best"],
                                         "size_mb": round(best_path.stat().st_size / 2**20, 2)})
    yield dg.AssetCheckResult(check_name=PARITY_CHECK, passed=not failed,
                              metadata={"max_abs_diff": dg.MetadataValue.json(diffs), "failed": failed,
                                        "tolerance": gates.parity_tolerance, "patches": len(sample)})


@dg.asset(deps=[onnx_model], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          description="int8 static quantization of the best candidate's ONNX model, kept (model.int8.onnx) only "
                      "when its held-out accuracy is within the profile's deploy.int8_tolerance of fp32.")
def int8_model(context: dg.AssetExecutionContext, profile: ProfileResource,
               storage: StorageResource) -> dg.MaterializeResult:
    prof = profile.get()
    cfg = prof.deploy
    best = json.loads((storage.path(prof.name, "test_report") / "report.json").read_text())["best"]
    report = gated_int8(storage.path(prof.name, "onnx", best, "model.onnx"),
                        load_patch_set(storage.path(prof.name, "patch_sets")), prof.clean_class,
                        cfg.int8_tolerance, cfg.calibration_patches, cfg.per_channel)
    if not report.accepted:
        context.log.warning(f"int8 refused: held-out accuracy {report.int8_accuracy:.4f} vs fp32 "
                            f"{report.fp32_accuracy:.4f} (tolerance {report.tolerance:g}); fp32 only")
    return dg.MaterializeResult(metadata={
        "arch": best, "accepted": report.accepted, "fp32_accuracy": report.fp32_accuracy,
        "int8_accuracy": report.int8_accuracy, "drop": report.drop, "tolerance": report.tolerance,
        "test_images": report.test_images, "path": report.int8_path or "none (refused)"})


@dg.asset(deps=[onnx_model, int8_model], group_name="classifier",
          automation_condition=dg.AutomationCondition.eager(),
          description="Every candidate's ONNX model (onnx + pyfunc flavours) registered in MLflow; the best is "
                      "aliased 'challenger' and becomes 'champion' only when above the trivial baseline and "
                      "at least as accurate as the champion on the same test captures.")
def registered_model(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                     captures: CaptureDataResource, mlflow: MlflowResource,
                     gates: QualityGatesResource) -> dg.MaterializeResult:
    prof = profile.get()
    test = json.loads((storage.path(prof.name, "test_report") / "report.json").read_text())
    outcomes = {}
    # the best candidate last, so its version is the newest and carries the challenger alias
    for arch in sorted(test["candidates"], key=lambda a: a == test["best"]):
        with tempfile.TemporaryDirectory() as tmp, \
                mlflow.nested_run(context, f"registration-{arch}", run_tags(prof.name, captures.version()),
                                  {"profile": prof.name, "arch": arch}) as run_id:
            fp32 = storage.path(prof.name, "onnx", arch, "model.onnx")
            int8 = fp32.with_name("model.int8.onnx")
            model_dir = package_mlflow_model(fp32, Path(tmp) / "model", int8 if int8.is_file() else None)
            outcomes[arch] = mlflow.register(
                run_id, model_dir, test["candidates"][arch]["accuracy"], test["test_set_id"],
                gates.promotion_margin, {"profile": prof.name, "arch": arch, "data_version": captures.version()},
                baseline=test["majority_baseline"], baseline_margin=gates.baseline_margin,
                contender=arch == test["best"])
            outcomes[arch]["run"] = run_id
    outcome = outcomes[test["best"]]
    return dg.MaterializeResult(metadata={
        "model": mlflow.model_name, "best": test["best"], "version": outcome["version"],
        "promoted": outcome["promote"], "int8_included": storage.path(prof.name, "onnx", test["best"],
                                                                      "model.int8.onnx").is_file(),
        "reason": outcome["reason"], "challenger_accuracy": outcome["challenger_accuracy"],
        "champion_accuracy": "none" if outcome["champion_accuracy"] is None else outcome["champion_accuracy"],
        "champion_version": outcome["champion_version"],
        "versions": dg.MetadataValue.json({a: o["version"] for a, o in outcomes.items()}),
        "mlflow_run": mlflow.run_link(outcome["run"])})
