"""One classifier experiment: k-fold CV, final model, image-level test, ONNX export.

Reads the patch sets written by :func:`smh_ml.datasets.save_datasets`; writes everything
to one output folder, atomically: ``model.pt`` (state dict), ``model.onnx``, ``report.json``,
``confusion_matrix.png``, ``threshold_curve.{csv,png}``, ``robustness.{csv,png}``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from smh_ml.datasets import load_patch_set, load_training_set
from smh_ml.decision import calibrate, threshold_curve
from smh_ml.export import check_parity, export_onnx, onnx_predict, session
from smh_ml.hardware import describe
from smh_ml.io import atomic_dir
from smh_ml.models import count_parameters
from smh_ml.patching import preprocessing_metadata
from smh_ml.plots import confusion_matrix_png, threshold_curve_png
from smh_ml.profiles import Profile, TrainConfig
from smh_ml.robustness import SEVERITIES, plot_robustness, robustness_table
from smh_ml.training import (
    class_names,
    cross_validate,
    encode,
    evaluate_images,
    state_dict_cpu,
    test_patches,
    train_final,
    validation_captures,
)


def load_classifier(folder: Path | str) -> tuple[torch.nn.Module, dict]:
    """A trained classifier from a ``run_classifier`` output folder, with its report."""
    from smh_ml.models import build

    folder = Path(folder)
    report = json.loads((folder / "report.json").read_text())
    model = build(report["arch"], len(report["classes"]), report["geometry"]["patch"], pretrained=False)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), report


def train_domain_extractor(patch_dir: Path | str, out: Path | str, profile: Profile,
                           epochs: int | None = None) -> dict:
    """A patch classifier trained on REAL patches (P-TA) whose penultimate layer gives the
    ``domain`` FID/KID features. Saved like :func:`run_classifier` output (no test). It is
    the paper's Inception-CNN (its 64-d penultimate layer) whatever the profile ships, trained
    for ``epochs`` passes with the profile's recipe, last checkpoint."""
    arch = profile.train.arch if profile.train.arch in ("inception_cnn", "baseline_cnn") else "inception_cnn"
    cfg = dataclasses.replace(profile.train, arch=arch, epochs=epochs or profile.train.epochs, steps=0,
                              val_fraction=0.0)
    patch_set = load_patch_set(patch_dir)
    pta = load_training_set(patch_dir, "pta")
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    fitted = train_final(pta.arrays, pta.index, names, cfg, patch_set.geometry.patch)
    report = {"arch": cfg.arch, "classes": names, "geometry": patch_set.geometry.to_dict(),
              "purpose": "domain feature extractor for FID/KID", "train_set": "pta",
              "history": fitted.history}
    with atomic_dir(Path(out)) as tmp:
        torch.save(state_dict_cpu(fitted.model), tmp / "model.pt")
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def held_out_test(model: torch.nn.Module, patch_set, names: list[str],
                  test: tuple[pd.DataFrame, list[np.ndarray]] | None = None, threshold: float | None = None):
    """Algorithm 1 on the held-out ORIGINAL captures: (metrics, misses/false-alarm curve).
    ``test``: the captures and patch groups of :func:`test_patches`, when already cut.
    ``threshold``: the calibrated threshold rule (the arg-max rule is reported beside it)."""
    captures, groups = test or test_patches(patch_set)
    metrics = evaluate_images(model, captures, groups, names, threshold=threshold)
    curve = threshold_curve(metrics.pop("per_image_probs"), encode(captures["label"], names))
    return metrics, curve


def write_test_figures(folder: Path, metrics: dict, curve, names: list[str], title: str) -> None:
    """``confusion_matrix.png`` and ``threshold_curve.{csv,png}`` into ``folder``."""
    rule = "threshold rule" if metrics.get("rule") == "threshold" else "Algorithm 1 (arg-max)"
    confusion_matrix_png(metrics["confusion_matrix"], names, folder / "confusion_matrix.png",
                         f"{title}, held-out captures, {rule}")
    curve.to_csv(folder / "threshold_curve.csv", index=False)
    threshold_curve_png(curve, folder / "threshold_curve.png", f"{title}: misses vs false alarms")


def decision_of(fitted, val, cfg: TrainConfig) -> dict:
    """The shipped model's decision threshold, calibrated on the validation captures' clean
    images with its selected checkpoint (None without validation captures)."""
    if val is None or fitted.val_probs is None:
        return {"threshold": None}
    validation = calibrate(fitted.val_probs, val.truth, cfg.target_false_alarm)
    return {"threshold": validation["threshold"], "target_false_alarm": cfg.target_false_alarm,
            "validation": validation, "validation_captures": int(len(val.truth))}


def export_metadata(trained: dict, test_accuracy: float, **extra) -> dict:
    """The ONNX metadata of a trained classifier (its report, see :func:`train_candidate`):
    what a runtime needs to decide as training did (preprocessing, threshold) and provenance."""
    return {"arch": trained["arch"], "profile": trained["profile"], "threshold": trained["decision"]["threshold"],
            "preprocessing": trained["preprocessing"], "test_accuracy": test_accuracy, **extra}


def train_candidate(patch_set, train, names: list[str], profile: Profile, cfg: TrainConfig,
                    cv: bool = True) -> dict:
    """The training half of a classifier experiment, shared by the CLI and the pipeline:
    k-fold CV (when ``cv`` and ``cfg.cv_folds`` > 1), the final model (best checkpoint on the
    validation captures) and its calibrated threshold. The report's ``model`` is the module."""
    patch = patch_set.geometry.patch
    report: dict = {"profile": profile.name, "arch": cfg.arch, "classes": names,
                    "geometry": patch_set.geometry.to_dict(), "train_set": cfg.train_set,
                    "train_size": int(len(train.arrays)), "train": dataclasses.asdict(cfg),
                    "device": "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
                    "hardware": describe(),
                    "preprocessing": preprocessing_metadata(patch_set.geometry, profile.patching.background_level)}
    start = time.perf_counter()
    if cv and cfg.cv_folds > 1:
        report["cv"] = cross_validate(train.arrays, train.index, names, cfg, patch)
        report["cv_seconds"] = time.perf_counter() - start
    t0 = time.perf_counter()
    val = validation_captures(patch_set, names, cfg)
    final = train_final(train.arrays, train.index, names, cfg, patch, val)
    report["final_fit_seconds"] = time.perf_counter() - t0
    report["final_history"] = final.history
    report["fit"] = final.summary()
    report["parameters"] = count_parameters(final.model)
    report["decision"] = decision_of(final, val, cfg)
    report["model"] = final.model
    return report


def run_classifier(patch_dir: Path | str, out: Path | str, profile: Profile, cv: bool = True,
                   robustness: bool = True, parity_tol: float = 1e-4,
                   severities: dict[str, tuple[float, ...]] = SEVERITIES,
                   train_dir: Path | str | None = None) -> dict:
    """Train, cross-validate, test and export the profile's classifier; returns the report.

    The training set ``profile.train.train_set`` (pta, ota-free patches, or pgan) is read from
    ``train_dir`` (default: ``patch_dir``); the test captures always come from ``patch_dir``.
    The shipped model is the best checkpoint on a validation split of the TRAINING captures,
    which also calibrates its decision threshold; the test captures are used once, at the end.
    """
    cfg = profile.train
    patch_set = load_patch_set(patch_dir)
    train = load_training_set(train_dir or patch_dir, cfg.train_set)
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    patch = patch_set.geometry.patch
    start = time.perf_counter()
    report = train_candidate(patch_set, train, names, profile, cfg, cv)
    final_model = report.pop("model")
    threshold = report["decision"]["threshold"]
    captures, groups = test_patches(patch_set)
    report["test"], curve = held_out_test(final_model, patch_set, names, (captures, groups), threshold)
    with atomic_dir(Path(out)) as tmp:
        torch.save(state_dict_cpu(final_model), tmp / "model.pt")
        write_test_figures(tmp, report["test"], curve, names, cfg.arch)
        onnx_path = export_onnx(final_model, tmp / "model.onnx", patch, names,
                                patch_set.geometry.to_dict(), export_metadata(report, report["test"]["accuracy"]))
        sample = np.concatenate(groups)[:512] if groups else patch_set.patches[:512]
        report["onnx_parity_max_abs_diff"] = check_parity(final_model, onnx_path, sample, parity_tol)
        if robustness:
            # Fig. 13 measures the exported model: the one that ships, within parity_tol of
            # torch and faster on the CPU (docs/DEPLOY.md).
            sess = session(onnx_path)

            def accuracy(transform):
                return evaluate_images(lambda arrays: onnx_predict(sess, arrays), captures, groups, names,
                                       transform, threshold)["accuracy"]

            table = robustness_table(accuracy, severities, seed=cfg.seed)
            table.to_csv(tmp / "robustness.csv", index=False)
            plot_robustness(table, tmp / "robustness.png", f"{cfg.arch} robustness")
            report["robustness"] = table.to_dict(orient="records")
        report["seconds"] = time.perf_counter() - start
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def run_whole_image_classifier(patch_dir: Path | str, out: Path | str, profile: Profile) -> dict:
    """O-TA (Table 8's first row): the baseline CNN on whole captures (cropped, resized to
    ``augment.ota_size``), one prediction per held-out capture, no patches, no Algorithm 1."""
    from smh_ml.models.baseline_cnn import baseline_cnn
    from smh_ml.training import classification_metrics, fit, predict_proba, seed_everything

    cfg = profile.train
    patch_set = load_patch_set(patch_dir)
    ota = load_training_set(patch_dir, "ota")
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    height, width = ota.arrays.shape[1:]
    start = time.perf_counter()
    seed_everything(cfg.seed)
    fitted = fit(baseline_cnn(len(names), width, height=height), ota.arrays, encode(ota.index["label"], names),
                 cfg, desc="O-TA baseline")
    test = (patch_set.captures["split"] == "test").to_numpy()
    predicted = predict_proba(fitted.model, patch_set.images[test]).argmax(1)
    metrics = classification_metrics(encode(patch_set.captures.loc[test, "label"], names), predicted, names)
    report = {"profile": profile.name, "arch": "baseline_cnn", "classes": names, "train_set": "ota",
              "input_size": [int(height), int(width)], "train_size": int(len(ota.arrays)),
              "train": vars(cfg).copy(), "parameters": count_parameters(fitted.model),
              "final_history": fitted.history, "test": metrics, "seconds": time.perf_counter() - start}
    with atomic_dir(Path(out)) as tmp:
        torch.save(state_dict_cpu(fitted.model), tmp / "model.pt")
        confusion_matrix_png(metrics["confusion_matrix"], names, tmp / "confusion_matrix.png",
                             "baseline CNN on O-TA, held-out whole captures")
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def test_set_id(patch_set) -> str:
    """Identity of the held-out test captures (ids and content hashes): scores are only
    comparable between models tested on the same captures."""
    import hashlib

    test = patch_set.captures[patch_set.captures["split"] == "test"].sort_values("capture_id")
    text = "\n".join(f"{c}\t{h}" for c, h in zip(test["capture_id"], test["content_hash"]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_classifier(out: Path | str, model: torch.nn.Module, report: dict) -> Path:
    """``model.pt`` + ``report.json`` (arch, classes, geometry, ...) written atomically."""
    with atomic_dir(Path(out)) as tmp:
        torch.save(state_dict_cpu(model), tmp / "model.pt")
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return Path(out)
