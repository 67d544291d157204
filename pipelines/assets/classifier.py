"""Assets: P-GAN training set -> CV classifiers -> test report -> ONNX (-> gated int8, robustness)
-> registered model.

Each candidate architecture has one folder, ``<storage>/<profile>/classifier/<arch>/``, in the
layout of :mod:`smh_ml.workflows.classifier` (the same as ``smh-ml train``); every asset runs
one stage of it. ``test_report/report.json`` compares the candidates and names the best."""

import dataclasses
import json
from pathlib import Path

import dagster as dg

from pipelines.assets.common import counts_table, picture, rounded, run_tags
from pipelines.assets.data import patch_sets
from pipelines.assets.gans import synthetic_sets
from pipelines.resources import (
    CaptureDataResource,
    MlflowResource,
    ProfileResource,
    QualityGatesResource,
    StorageResource,
)
from smh_ml.data.datasets import load_captures
from smh_ml.data.recipe import recorded_recipe
from smh_ml.deploy.runtime import read_card
from smh_ml.export.onnx import ParityError
from smh_ml.io import atomic_dir, atomic_write_text, scratch_dir
from smh_ml.synthetic.pgan import defect_classes, missing_synthetic, save_training_set
from smh_ml.tracking.packaging import package_model
from smh_ml.tracking.promotion import accuracy_floor, passes_floor
from smh_ml.training.baselines import test_set_id
from smh_ml.training.loop import class_names
from smh_ml.workflows.classifier import (
    INT8,
    ONNX,
    ClassifierReport,
    budget_cv,
    candidates_of,
    export_stage,
    fit_stage,
    plan_training,
    quantize_stage,
    robustness_stage,
    save_fit,
    select_candidate,
    test_stage,
)
from smh_ml.workflows.trial import TRIAL_FITS, trial_fits, trial_pgan

SELECTION = "selection.json"
ACCURACY_CHECK = "test_accuracy_floor"
PARITY_CHECK = "onnx_parity"


@dg.asset(deps=[patch_sets, synthetic_sets], group_name="classifier",
          automation_condition=dg.AutomationCondition.eager(),
          description="P-GAN: real TRAIN patches plus the synthetic patches that passed the validation trial "
                      "(every class whose patches passed the content checks, with and without; the fit "
                      "of the winning set is kept for cv_classifiers).")
def training_set(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                 captures: CaptureDataResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    prof = profile.resolved(storage)
    patch_set = storage.store(prof.name).patch_set()
    gan_dir = storage.store(prof.name).gan_dir
    classes = defect_classes(patch_set, prof.clean_class)
    if missing := missing_synthetic(gan_dir, classes):
        raise dg.Failure(
            description=f"no synthetic set for defect classes {missing} in {gan_dir}: their GAN runs did not "
                        "finish. The gans job's runs for them are requested by the gans_after_prepare sensor "
                        f"(or run: dagster job execute -j gans --partition <class>); {prof.name}/training_set "
                        "is unchanged.",
            metadata={"missing": missing})
    out = storage.store(prof.name).training_set_dir
    with atomic_dir(out) as tmp:
        pgan, trial = trial_pgan(patch_set, gan_dir, classes, prof, keep=tmp / TRIAL_FITS)
        save_training_set(tmp / "pgan", pgan)
        if trial is not None:
            trial.save(tmp / "trial.json")
    counts = pgan.index.groupby(["label", "origin"]).size().unstack(fill_value=0)
    metadata = {"path": dg.MetadataValue.path(str(out)), "patches": len(pgan.index),
                "per_class": dg.MetadataValue.md(f"```\n{counts.to_string()}\n```"), "classes": classes,
                "trial": trial.reason if trial else "no class on trial (no synthetic patch passed the content checks)"}
    if trial is not None:
        context.log.info(f"validation trial: {trial.reason}")
        tracker = mlflow.tracker()
        with mlflow.nested_run(context, "synthetic-trial", run_tags(prof.name, captures.version()),
                               {"arch": trial.arch, "classes": ",".join(trial.classes),
                                "min_gain": trial.min_gain}) as run_id:
            tracker.log_metrics(run_id, {"val_accuracy_without": trial.without["accuracy"],
                                         "val_accuracy_with": trial.with_synthetic["accuracy"],
                                         "admitted": float(trial.admitted), "seconds": trial.seconds})
            tracker.log_dict(run_id, trial.to_dict(), "trial.json")
        metadata |= {"trial_admitted": trial.admitted, "trial_classes": trial.classes,
                     "val_accuracy_without": rounded(trial.without["accuracy"]),
                     "val_accuracy_with": rounded(trial.with_synthetic["accuracy"]),
                     "mlflow_run": dg.MetadataValue.url(tracker.run_link(run_id))}
    return dg.MaterializeResult(metadata=metadata)


def _candidate_dir(storage: StorageResource, profile: str, arch: str) -> Path:
    return storage.store(profile).candidate_dir(arch)


def _best(storage: StorageResource, profile: str) -> dict:
    """The candidates' comparison written by ``test_report``."""
    return json.loads((storage.store(profile).test_report_dir / "report.json").read_text())


@dg.asset(deps=[training_set], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          description="For each candidate architecture of the profile: k-fold CV (grouped by capture), then "
                      "the final model (best checkpoint on a validation split of the training captures) "
                      "and its decision threshold calibrated on that split.")
def cv_classifiers(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                   captures: CaptureDataResource, mlflow: MlflowResource) -> dg.MaterializeResult:
    prof = profile.resolved(storage)
    store = storage.store(prof.name)
    candidates = candidates_of(store.patch_dir, dataclasses.replace(
        prof, train=dataclasses.replace(prof.train, train_set="pgan")), store.training_set_dir)
    names = class_names(set(candidates[0].patch_set.captures["label"]), prof.clean_class)
    tags = run_tags(prof.name, captures.version())
    tracker = mlflow.tracker()
    recipe = recorded_recipe(store.patch_dir)
    cfgs, budget = plan_training(candidates, names, prof)
    kept = {c.key: c for c in candidates if c.key in cfgs}
    # the synthetic trial fitted the first candidate on the training set it chose: reused when
    # its inputs (data, steps, seed) are this fit's
    reuse = trial_fits(store.training_set_dir)
    summary, reports = {}, {}
    for arch, cfg in cfgs.items():
        # with a budget, CV waits for the choice: only the chosen candidate is cross-validated
        c = kept[arch]
        model, report = fit_stage(c.patch_set, c.train, names, c.profile, cfg, budget is None, recipe, budget,
                                  c.patch_folder, reuse=reuse)
        reports[arch] = report
        save_fit(_candidate_dir(storage, prof.name, arch), model, report)
        recipe_params = {} if recipe is None else {
            "recipe_geometry": recipe["geometry"], "recipe_patch": recipe["patch"], "recipe_tiles": recipe["tiles"],
            "recipe_defect_px": recipe["defect_px"], "recipe_candidates": ",".join(recipe["candidates"])}
        budget_params = {} if budget is None else {"budget_minutes": budget["budget_minutes"],
                                                   "budget_dropped": ",".join(budget["dropped"]) or "none"}
        recipe_params |= {"patch_folder": c.patch_folder, "patch": c.patch_set.geometry.patch,
                          "tiles": c.patch_set.geometry.tiles}
        with mlflow.nested_run(context, f"train-{arch}", tags | {"arch": arch},
                               dataclasses.asdict(cfg) | report.fit | recipe_params | budget_params) as run_id:
            tracker.log_history(run_id, report.final_history)
            tracker.log_metrics(run_id, {key: report.fit[key] for key in ("patches_per_second", "train_seconds")}
                                | {"threshold": report.threshold})
            for fold in (report.cv or {}).get("folds", []):
                tracker.log_metrics(run_id, {f"cv_{part}_accuracy": fold[part]["accuracy"]
                                             for part in ("all", "real_only")}, step=fold["fold"])
            tracker.log_dict(run_id, report.to_dict(), "train_report.json")
        summary[arch] = {"cv_accuracy": (report.cv or {}).get("summary", {}).get("all", {}).get("mean_accuracy"),
                         "val_accuracy": report.validation_accuracy, "val_threshold": report.threshold,
                         **report.fit}
    selection = select_candidate(reports) | {"dropped": list((budget or {}).get("dropped", []))}
    for arch, report in reports.items():
        report.selection = selection
        report.save(_candidate_dir(storage, prof.name, arch))
    chosen_cv = budget_cv(_candidate_dir(storage, prof.name, selection["best"]), kept[selection["best"]].train,
                          cfgs[selection["best"]], budget, selection["best"])
    if chosen_cv is not None:
        summary[selection["best"]]["cv_accuracy"] = chosen_cv.cv["summary"]["all"]["mean_accuracy"]
        with mlflow.nested_run(context, f"cv-{selection['best']}", tags | {"arch": selection["best"]},
                               {"cv_folds": chosen_cv.cv["k"], "cv_steps": chosen_cv.cv["steps"]}) as run_id:
            for fold in chosen_cv.cv["folds"]:
                tracker.log_metrics(run_id, {f"cv_{part}_accuracy": fold[part]["accuracy"]
                                             for part in ("all", "real_only")}, step=fold["fold"])
    atomic_write_text(storage.store(prof.name).classifier_dir / SELECTION,
                      json.dumps({"candidates": list(cfgs), "selection": selection, "budget": budget}, indent=1) + "\n")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(storage.store(prof.name).classifier_dir)),
        "chosen_on_validation": selection["best"], "selection_metric": selection["metric"],
        "candidates": dg.MetadataValue.json(summary),
        **({} if budget is None else {"budget": dg.MetadataValue.md("\n".join(f"- {r}" for r in budget["reasons"]))})})


@dg.asset(deps=[cv_classifiers], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(ACCURACY_CHECK, asset="test_report", blocking=True,
                                         description="The best candidate's held-out accuracy is above the trivial "
                                                     "baseline (always the majority class) + margin, and the floor")],
          description="Each candidate on the same held-out ORIGINAL captures: the calibrated threshold rule and "
                      "the paper's arg-max Algorithm 1, AUROC, recall at the false-alarm target, per-class "
                      "P/R/F1, confusion matrix; the best candidate is named.")
def test_report(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                captures: CaptureDataResource, mlflow: MlflowResource, gates: QualityGatesResource):
    prof = profile.resolved(storage)
    store = storage.store(prof.name)
    chosen = json.loads((store.classifier_dir / SELECTION).read_text())
    sets = store.candidate_sets(chosen["candidates"])
    reports = {arch: test_stage(_candidate_dir(storage, prof.name, arch), *sets[arch])
               for arch in chosen["candidates"]}
    candidates = {arch: r.test for arch, r in reports.items()}
    parameters = {arch: r.parameters for arch, r in reports.items()}
    best = chosen["selection"]["best"]  # chosen on the validation captures, before this test
    baseline = candidates[best]["image"]["majority_baseline"]
    report = {"best": best, "selection": chosen["selection"], "accuracy": candidates[best]["accuracy"],
              "majority_baseline": baseline,
              "test_set_id": test_set_id(sets[best][0]), "classes": reports[best].classes, "candidates": candidates,
              "parameters": parameters}
    out = storage.store(prof.name).test_report_dir
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    runs = {}
    tracker = mlflow.tracker()
    for arch, metrics in candidates.items():
        with mlflow.nested_run(context, f"test-{arch}", run_tags(prof.name, captures.version()) | {"arch": arch},
                               {"test_set_id": report["test_set_id"], "test_captures": metrics["n"],
                                "rule": metrics["rule"]}) as run_id:
            tracker.log_metrics(run_id, {
                "test_accuracy": metrics["accuracy"], "majority_baseline": baseline,
                "test_accuracy_argmax": metrics.get("argmax", metrics)["accuracy"],
                **{f"test_{key}": metrics["image"].get(key) for key in ("auroc", "defect_recall", "false_alarm_rate")},
                **{f"test_{key}_{name}": m[key] for name, m in metrics["per_class"].items()
                   for key in ("precision", "recall", "f1")}})
            folder = _candidate_dir(storage, prof.name, arch)
            for name in ("confusion_matrix.png", "threshold_curve.png", "threshold_curve.csv"):
                tracker.log_artifacts(run_id, folder / name, "test_report")
            runs[arch] = dg.MetadataValue.url(tracker.run_link(run_id))
    floor = accuracy_floor(baseline, gates.baseline_margin, gates.accuracy_floor, candidates[best]["n"])
    table = "\n".join(f"| {a} | {m['accuracy']:.4f} | {m.get('argmax', m)['accuracy']:.4f} | "
                      f"{m['image']['auroc']:.4f} | {m['image'].get('defect_recall', float('nan')):.4f} | "
                      f"{m['image'].get('false_alarm_rate', float('nan')):.4f} |" for a, m in candidates.items())
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)), "best": best, "test_accuracy": rounded(report["accuracy"]),
        "majority_baseline": rounded(baseline), "test_captures": candidates[best]["n"],
        "test_set_id": report["test_set_id"],
        "candidates": dg.MetadataValue.md("| arch | accuracy (threshold) | accuracy (arg-max) | AUROC | defect recall "
                                          "| false alarms |\n|---|---|---|---|---|---|\n" + table),
        "f1": counts_table({k: v["f1"] for k, v in candidates[best]["per_class"].items()}, value="F1"),
        "confusion_matrix": picture(_candidate_dir(storage, prof.name, best) / "confusion_matrix.png",
                                    f"{best}: confusion matrix, held-out captures"),
        "threshold_curve": picture(_candidate_dir(storage, prof.name, best) / "threshold_curve.png",
                                   f"{best}: misses vs false alarms by threshold"),
        **{f"mlflow_run_{arch}": link for arch, link in runs.items()}})
    yield dg.AssetCheckResult(check_name=ACCURACY_CHECK, passed=passes_floor(report["accuracy"], floor),
                              metadata={"accuracy": rounded(report["accuracy"]), "floor": rounded(floor),
                                        "majority_baseline": rounded(baseline),
                                        "baseline_margin": gates.baseline_margin, "best": best})


@dg.asset(deps=[test_report], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(PARITY_CHECK, asset="onnx_model", blocking=True,
                                         description="ONNX vs torch probabilities on real test patches")],
          description="One self-contained ONNX file per candidate (dynamic batch; class names, geometry, "
                      "background level and the calibrated threshold in its metadata), kept only when it "
                      "matches torch.")
def onnx_model(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
               gates: QualityGatesResource):
    prof = profile.resolved(storage)
    compared = _best(storage, prof.name)
    diffs, failed = {}, []
    sets = storage.store(prof.name).candidate_sets(compared["candidates"])
    for arch in compared["candidates"]:
        try:
            report = export_stage(_candidate_dir(storage, prof.name, arch), sets[arch][0], gates.parity_tolerance,
                                  sets[arch][1], test_set_id=compared["test_set_id"])
            diffs[arch] = report.onnx["parity_max_abs_diff"]
        except ParityError as exc:
            context.log.error(str(exc))
            diffs[arch], failed = float("nan"), [*failed, arch]
    best_path = _candidate_dir(storage, prof.name, compared["best"]) / ONNX
    yield dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(best_path)), "best": compared["best"],
        "size_mb": round(best_path.stat().st_size / 2**20, 2) if best_path.is_file() else "none (parity failed)"})
    yield dg.AssetCheckResult(check_name=PARITY_CHECK, passed=not failed,
                              metadata={"max_abs_diff": dg.MetadataValue.json(diffs), "failed": failed,
                                        "tolerance": gates.parity_tolerance})


@dg.asset(deps=[onnx_model], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          description="The precision gate: int8 static quantization of the best candidate's ONNX model (kept as "
                      "model.int8.onnx) and OpenVINO bf16, each accepted only when its accuracy on the validation "
                      "captures is within the profile's deploy.int8_tolerance of fp32; the verdicts go into the "
                      "model card, so `--backend auto` runs only an accepted path.")
def int8_model(context: dg.AssetExecutionContext, profile: ProfileResource,
               storage: StorageResource) -> dg.MaterializeResult:
    prof = profile.resolved(storage)
    best = _best(storage, prof.name)["best"]
    store = storage.store(prof.name)
    report = quantize_stage(_candidate_dir(storage, prof.name, best), store.candidate_patch_set(best), prof.deploy,
                            prof.clean_class)
    gate, bf16 = report.int8, report.bf16
    drop = gate["fp32_accuracy"] - gate["int8_accuracy"]
    for name, verdict in (("int8", gate["verdict"]), ("bf16", bf16)):
        log = context.log.info if verdict["accepted"] else context.log.warning
        log(f"{name} {'accepted' if verdict['accepted'] else 'refused'}: {verdict['reason']}")
    return dg.MaterializeResult(metadata={
        "arch": best, "accepted": gate["accepted"], "fp32_accuracy": rounded(gate["fp32_accuracy"]),
        "int8_accuracy": rounded(gate["int8_accuracy"]), "drop": rounded(drop), "tolerance": gate["tolerance"],
        "validation_captures": gate["captures"], "path": gate["int8_path"] or "none (refused)",
        "int8_verdict": gate["verdict"]["reason"], "bf16_accepted": bf16["accepted"],
        "bf16_accuracy": rounded(bf16["accuracy"]) if bf16["accuracy"] is not None else "not measured",
        "bf16_verdict": bf16["reason"]})


@dg.asset(deps=[onnx_model], group_name="classifier", automation_condition=dg.AutomationCondition.eager(),
          description="Fig. 13 for the best candidate's exported model: held-out accuracy under blur, noise, "
                      "light and scratches, with its decision rule.")
def robustness_report(context: dg.AssetExecutionContext, profile: ProfileResource,
                      storage: StorageResource) -> dg.MaterializeResult:
    prof = profile.resolved(storage)
    best = _best(storage, prof.name)["best"]
    folder = _candidate_dir(storage, prof.name, best)
    report = robustness_stage(folder, storage.store(prof.name).candidate_patch_set(best), seed=prof.train.seed)
    rows = "\n".join(f"| {r['perturbation']} | {r['severity']:g} | {r['accuracy']:.4f} |" for r in report.robustness)
    return dg.MaterializeResult(metadata={
        "arch": best, "path": dg.MetadataValue.path(str(folder / "robustness.csv")),
        "accuracy": dg.MetadataValue.md("| perturbation | severity | accuracy |\n|---|---|---|\n" + rows),
        "plot": picture(folder / "robustness.png", f"{best}: accuracy under perturbations")})


@dg.asset(deps=[onnx_model, int8_model], group_name="classifier", pool="model_registry",
          automation_condition=dg.AutomationCondition.eager(),
          description="Every candidate's ONNX model (onnx + pyfunc flavours) registered in MLflow; the best is "
                      "aliased 'challenger' and becomes 'champion' only when above the trivial baseline and "
                      "at least as accurate as the champion on the same test captures.")
def registered_model(context: dg.AssetExecutionContext, profile: ProfileResource, storage: StorageResource,
                     captures: CaptureDataResource, mlflow: MlflowResource,
                     gates: QualityGatesResource) -> dg.MaterializeResult:
    prof = profile.resolved(storage)
    test = _best(storage, prof.name)
    tracker = mlflow.tracker()
    captures_df = load_captures(storage.store(prof.name).patch_dir)
    tests = captures_df[captures_df["split"] == "test"]
    examples = [Path(p) for p in tests["path"] if Path(p).is_file()]
    outcomes = {}
    # the best candidate last, so its version is the newest and carries the challenger alias
    for arch in sorted(test["candidates"], key=lambda a: a == test["best"]):
        folder = _candidate_dir(storage, prof.name, arch)
        if ClassifierReport.load(folder).onnx is None:
            context.log.warning(f"{arch}: no exported model (parity failed); not registered")
            continue
        with scratch_dir(storage.path(prof.name, "registration")) as tmp, \
                mlflow.nested_run(context, f"registration-{arch}", run_tags(prof.name, captures.version()),
                                  {"profile": prof.name, "arch": arch}) as run_id:
            int8 = folder / INT8
            model_dir = package_model(folder / ONNX, Path(tmp) / "model", int8 if int8.is_file() else None,
                                      input_example=examples[0] if examples else None)
            outcomes[arch] = tracker.register(
                run_id, model_dir, test["candidates"][arch]["accuracy"], test["test_set_id"],
                gates.promotion_margin, {**read_card(folder / ONNX).tags(), "data_version": captures.version()},
                baseline=test["majority_baseline"], baseline_margin=gates.baseline_margin,
                contender=arch == test["best"], test_size=test["candidates"][arch]["n"],
                retest=lambda version: tracker.version_accuracy(version, tests["path"], tests["label"],
                                                                tmp / "champion"))
            outcomes[arch]["run"] = run_id
    outcome = outcomes[test["best"]]
    return dg.MaterializeResult(metadata={
        "model": mlflow.model_name, "best": test["best"], "version": outcome["version"],
        "promoted": outcome["promote"], "int8_included": (_candidate_dir(storage, prof.name, test["best"])
                                                          / INT8).is_file(),
        "reason": outcome["reason"], "challenger_accuracy": rounded(outcome["challenger_accuracy"]),
        "champion_accuracy": "none" if outcome["champion_accuracy"] is None else rounded(outcome["champion_accuracy"]),
        "champion_version": outcome["champion_version"],
        "versions": dg.MetadataValue.json({a: o["version"] for a, o in outcomes.items()}),
        "mlflow_run": dg.MetadataValue.url(tracker.run_link(outcome["run"]))})
