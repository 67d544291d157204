"""The classifier experiment as stages, one folder per trained candidate.

    fit         k-fold CV (grouped by capture), the final model (best checkpoint on the
                validation captures) and its calibrated threshold -> model.pt, report.json
    test        Algorithm 1 on the held-out ORIGINAL captures, both rules -> confusion_matrix.png,
                threshold_curve.{csv,png}
    export      ONNX with its metadata, kept only when it matches torch -> model.onnx
    quantize    gated int8 -> model.int8.onnx, only within the profile's tolerance of fp32
    robustness  the exported model under blur, noise, light and scratches (Fig. 13)
                -> robustness.{csv,png}

``smh-ml train``, ``smh-ml reproduce`` and the Dagster assets call these same functions on the
same layout; every stage adds its section to one :class:`ClassifierReport` (``report.json``).
``fit`` replaces the whole folder, so files of an earlier model never sit beside a new one;
each later stage writes its files atomically and then the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from smh_ml.config.schema import DeployConfig, Profile, TrainConfig
from smh_ml.data.datasets import ALTERNATE, DATA_SECTIONS, PatchSet, TrainingSet, load_patch_set, load_training_set
from smh_ml.data.patching import Geometry, preprocessing_metadata
from smh_ml.decision import UNKNOWN_RATE, calibrate_unknown, threshold_curve
from smh_ml.deploy.card import MAX_PIXELS_FACTOR, ModelCard
from smh_ml.deploy.runtime import load_onnx, onnx_predict
from smh_ml.evaluation.image_metrics import calibrate
from smh_ml.evaluation.plots import confusion_matrix_png, threshold_curve_png
from smh_ml.evaluation.robustness import SEVERITIES, plot_robustness, robustness_table
from smh_ml.export.onnx import check_parity, export_onnx
from smh_ml.hardware import describe
from smh_ml.io import atomic_write_text
from smh_ml.models import count_parameters
from smh_ml.models.feature_distance import FeatureDistance
from smh_ml.training.budget import candidate_config, plan_budget
from smh_ml.training.checkpoint import load_classifier, save_classifier
from smh_ml.training.loop import (
    class_names,
    cross_validate,
    encode,
    evaluate_images,
    final_training_patches,
    measure_step_cost,
    test_patches,
    train_final,
    validation_captures,
)
from smh_ml.training.unknown import capture_distances, fit_feature_distance

log = logging.getLogger(__name__)

REPORT = "report.json"
ONNX = "model.onnx"
INT8 = "model.int8.onnx"


@dataclass
class ClassifierReport:
    """What one candidate's folder holds, stage by stage (None: the stage has not run)."""

    profile: str
    arch: str
    classes: list[str]
    geometry: dict[str, int]
    train_set: str
    train_size: int
    train: dict[str, Any]
    """The TrainConfig that ran."""
    device: str
    hardware: dict[str, Any]
    preprocessing: dict[str, Any]
    """Everything the engine needs to cut a capture as training did (also in the ONNX metadata)."""
    parameters: int = 0
    fit: dict[str, Any] = field(default_factory=dict)
    """steps, best_step, precision, patches_per_second, train_seconds."""
    final_history: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=lambda: {"threshold": None})
    """The calibrated threshold, its false-alarm target and the validation figures at it."""
    cv: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    """Held-out image metrics under the shipped rule, with ``argmax`` (the paper's rule) beside."""
    onnx: dict[str, Any] | None = None
    """file, parity_max_abs_diff, parity_tolerance, parity_patches."""
    int8: dict[str, Any] | None = None
    bf16: dict[str, Any] | None = None
    """The precision gate's verdict on OpenVINO bf16 (validation captures)."""
    robustness: list[dict[str, Any]] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage (cv, fit, unknown, test, export, quantize, robustness)."""
    recipe: dict[str, Any] | None = None
    """The recipe from the data the patch set was built with (geometry, reasons), if ``auto``."""
    budget: dict[str, Any] | None = None
    """The minute budget's plan: measured step costs, the steps each candidate got."""
    selection: dict[str, Any] | None = None
    """How this candidate was chosen among the others: validation scores of all of them."""
    patch_folder: str = "."
    """The patch folder it learnt from, relative to the patch set's: ``alternate`` for a close
    call's other geometry (smh_ml.data.recipe)."""
    reused_fit: str | None = None
    """The folder of the earlier fit with the same inputs that stands for this final fit (the
    synthetic trial's), None when it was trained here."""

    @property
    def validation_accuracy(self) -> float | None:
        """Image accuracy on the validation captures at the shipped checkpoint (the record of
        the best step), None without validation captures."""
        best = self.fit.get("best_step")
        scores = [r for r in self.final_history if r.get("step") == best and "val_accuracy" in r]
        return float(scores[-1]["val_accuracy"]) if scores else None

    @property
    def threshold(self) -> float | None:
        return self.decision.get("threshold")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, folder: Path | str) -> Path:
        return atomic_write_text(Path(folder) / REPORT, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def update(cls, folder: Path | str, seconds: dict[str, float] | None = None, **sections: Any) -> ClassifierReport:
        """Set ``sections`` (and add ``seconds``) on the report in ``folder`` under an exclusive
        lock, re-read inside it: the int8 and robustness stages run side by side in the
        pipeline, and a plain load-change-save of each would drop the other's section."""
        import fcntl

        with open(Path(folder) / ".report.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                report = cls.load(folder)
                for name, value in sections.items():
                    setattr(report, name, value)
                report.seconds |= seconds or {}
                report.save(folder)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return report

    @classmethod
    def load(cls, folder: Path | str) -> ClassifierReport:
        path = Path(folder) / REPORT
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no classifier report (run the fit stage first)")
        return cls.from_dict(json.loads(path.read_text()), path)

    @classmethod
    def from_dict(cls, data: dict, path: Path | str = REPORT) -> ClassifierReport:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING} - set(data)
        if missing:
            raise ValueError(f"{path}: not a classifier report (lacks {sorted(missing)})")
        return cls(**{k: v for k, v in data.items() if k in known})


def max_pixels_of(patch_set: PatchSet) -> int:
    """The card's capture size limit: :data:`~smh_ml.deploy.card.MAX_PIXELS_FACTOR` times the
    largest capture the patch set holds."""
    captures = patch_set.captures
    return MAX_PIXELS_FACTOR * int((captures["height"].astype(np.int64) * captures["width"].astype(np.int64)).max())


def model_card(report: ClassifierReport, max_pixels: int | None = None, **provenance) -> ModelCard:
    """The model card of a trained classifier: what a runtime needs to decide as training did
    (geometry, background level, classes, threshold) and where it came from."""
    recipe = None
    if report.recipe is not None:  # the geometry of the folder it learnt from: a close call's other one
        own = report.recipe["alternate"] if report.patch_folder == ALTERNATE else report.recipe
        recipe = {k: own[k] for k in ("geometry", "patch", "tiles", "defect_px")} \
            | {"reasons": report.recipe["reasons"]}
    return ModelCard(arch=report.arch, classes=tuple(report.classes), geometry=Geometry(**report.geometry),
                     background_level=int(report.preprocessing["background_level"]), threshold=report.threshold,
                     unknown_threshold=report.decision.get("unknown_threshold"), max_pixels=max_pixels,
                     profile=report.profile, recipe=recipe,
                     test_accuracy=None if report.test is None else report.test["accuracy"], provenance=provenance)


def decision_of(fitted, val, cfg: TrainConfig, unknown: FeatureDistance | None = None) -> dict:
    """The shipped model's decision threshold, calibrated on the validation captures' clean
    images with its selected checkpoint (None without validation captures), and with
    ``unknown`` (the model with its feature statistics) the unknown threshold, calibrated on
    the same captures."""
    if val is None or fitted.val_probs is None:
        return {"threshold": None}
    validation = calibrate(fitted.val_probs, val.truth, cfg.target_false_alarm)
    decision = {"threshold": validation["threshold"], "target_false_alarm": cfg.target_false_alarm,
                "validation": validation, "validation_captures": int(len(val.truth))}
    if unknown is not None:
        decision |= {"unknown_score": "feature_distance", "unknown_rate": UNKNOWN_RATE,
                     "unknown_threshold": calibrate_unknown(capture_distances(unknown, val.groups))}
    return decision


# --- stages ---------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One model that competes on the validation captures: what it learns from and how."""

    key: str
    """Its folder and its name in the selection: the architecture, or ``<arch>-<geometry>``
    for a close call's other geometry."""
    patch_set: PatchSet
    train: TrainingSet
    profile: Profile
    cfg: TrainConfig
    patch_folder: str = "."


def candidates_of(patch_dir: Path | str, profile: Profile, train_dir: Path | str | None = None,
                  archs: list[str] | None = None, overrides: dict[str, Any] | None = None) -> list[Candidate]:
    """The candidates of a patch folder: ``archs`` (default the profile's) on its patch set
    and ``profile.train.train_set`` from ``train_dir`` (default the patch folder). On a close
    call (an ``alternate/`` patch folder) and with no ``archs`` named, the other geometry's
    candidates on its P-TA too, under its recorded profile with the caller's settings and
    ``overrides``, listed alternately with the first ones so that a short budget keeps the
    first of each geometry."""
    from smh_ml.config.overrides import with_overrides
    from smh_ml.data.recipe import is_auto, profile_for_folder

    patch_set = load_patch_set(patch_dir)
    train = load_training_set(train_dir or patch_dir, profile.train.train_set)
    first = [Candidate(a, patch_set, train, profile, candidate_config(profile.train, a))
             for a in archs or profile.train.architectures()]
    alt_dir = Path(patch_dir) / ALTERNATE
    if archs or not is_auto(profile) or not (alt_dir / "geometry.json").is_file():
        return first  # a named profile trains what it names
    # the caller's settings of how to train apply to both geometries; those of the data do not
    # (the other geometry's folder was cut under its own)
    own = [s for s in profile.settings if s.partition(".")[0] not in DATA_SECTIONS]
    alt = with_overrides(profile_for_folder(dataclasses.replace(profile, settings=tuple(own)), alt_dir),
                         {k: v for k, v in (overrides or {}).items() if k not in ("train.arch", "train.train_set")})
    alt_set, alt_train = load_patch_set(alt_dir), load_training_set(alt_dir, "pta")
    geometry = "whole" if alt_set.geometry.tiles == 1 else "tiles"
    other = [Candidate(f"{a}-{geometry}", alt_set, alt_train, alt, dataclasses.replace(
        candidate_config(alt.train, a), train_set="pta"), ALTERNATE) for a in alt.train.architectures()]
    return [c for pair in zip_longest(first, other) for c in pair if c is not None]


def plan_training(candidates: list[Candidate], names: list[str], profile: Profile, cv: bool = True
                  ) -> tuple[dict[str, TrainConfig], dict | None]:
    """Each candidate's TrainConfig, by key. With ``train.budget_minutes``, a measured warm-up
    of every candidate on its own training patches turns the minutes into steps
    (smh_ml.training.budget): the final fits' steps here, the chosen one's CV steps in the plan,
    which comes back as a record (None without a budget)."""
    cfgs = {c.key: c.cfg for c in candidates}
    minutes = profile.train.budget_minutes
    if minutes <= 0:
        return cfgs, None
    start = time.perf_counter()
    costs = []
    for c in candidates:
        val = validation_captures(c.patch_set, names, c.cfg)
        cost = measure_step_cost(c.train.arrays, c.train.index, names, c.cfg, c.patch_set.geometry.patch, val)
        costs.append(dataclasses.replace(cost, arch=c.key))
    warmup = time.perf_counter() - start
    plan = plan_budget(costs, max(minutes * 60 - warmup, 1.0), candidates[0].cfg.cv_folds if cv else 0)
    log.info("budget %g min (warm-up %.0f s): %s", minutes, warmup, "; ".join(plan.reasons))
    planned = {key: dataclasses.replace(cfgs[key], steps=steps, eval_every=every)
               for key, (steps, every) in plan.steps().items()}
    return planned, plan.to_dict() | {"budget_minutes": minutes, "warmup_seconds": round(warmup, 1),
                                      "costs": [dataclasses.asdict(c) for c in costs]}


def cv_stage(folder: Path | str, train, cfg: TrainConfig, steps: int) -> ClassifierReport:
    """k-fold CV of a fitted candidate's recipe at ``steps`` steps a fold (the budget's share
    for it), added to its report; the model is not touched."""
    report = ClassifierReport.load(folder)
    start = time.perf_counter()
    report.cv = cross_validate(train.arrays, train.index, report.classes, dataclasses.replace(cfg, steps=steps),
                               report.geometry["patch"]) | {"steps": steps}
    report.seconds["cv"] = time.perf_counter() - start
    report.save(folder)
    return report


def budget_cv(folder: Path | str, train, cfg: TrainConfig, budget: dict | None, key: str) -> ClassifierReport | None:
    """The chosen candidate's CV when the budget left it steps (None: no CV ran); ``key``: its
    name in the plan."""
    if budget is None:
        return None
    steps = next(c["cv_steps"] for c in budget["candidates"] if c["arch"] == key)
    return cv_stage(folder, train, cfg, steps) if steps else None


def fit_inputs(patch_set: PatchSet, train: TrainingSet, profile: Profile, cfg: TrainConfig) -> dict:
    """What a final fit is computed from: the patch set (its captures, split and patch labels),
    the training set's content, the profile's data sections and the training settings. Which
    training set a caller calls it by (``train_set``) is not an input."""
    import hashlib

    data = hashlib.sha256(np.ascontiguousarray(train.arrays).tobytes())
    data.update(train.index.to_csv(index=False).encode())
    patches = hashlib.sha256(json.dumps(patch_set.geometry.to_dict(), sort_keys=True).encode())
    patches.update(patch_set.captures.to_csv(index=False).encode() + patch_set.index.to_csv(index=False).encode())
    sections = {k: v for k, v in dataclasses.asdict(profile).items() if k not in ("train", "name", "description")}
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "train_set"}
    return json.loads(json.dumps({"patch_set": patches.hexdigest()[:16], "train": data.hexdigest()[:16],
                                  "profile": sections, "cfg": settings}, default=str))


def save_reusable_fit(folder: Path | str, model: torch.nn.Module, report: ClassifierReport, patch_set: PatchSet,
                      train: TrainingSet, profile: Profile, cfg: TrainConfig) -> Path:
    """A fit saved with :func:`fit_inputs`, for :func:`fit_stage` to reuse (``reuse=``)."""
    from smh_ml.workflows.step_cache import stamp

    save_fit(folder, model, report)
    stamp(folder, fit_inputs(patch_set, train, profile, cfg))
    return Path(folder)


def reusable_fit(folders, inputs: dict) -> Path | None:
    """The first of ``folders`` holding a fit computed from exactly ``inputs``."""
    from smh_ml.workflows.step_cache import stamped

    return next((Path(f) for f in folders if (Path(f) / REPORT).is_file() and stamped(f, inputs)), None)


def fit_stage(patch_set, train, names: list[str], profile: Profile, cfg: TrainConfig,
              cv: bool = True, recipe: dict | None = None,
              budget: dict | None = None, patch_folder: str = ".",
              reuse: tuple[Path, ...] = ()) -> tuple[torch.nn.Module, ClassifierReport]:
    """k-fold CV (when ``cv`` and ``cfg.cv_folds`` > 1), the final model and its threshold.
    The test captures are not touched. ``recipe``, ``budget`` and ``patch_folder`` (where
    ``patch_set`` lies, relative to the patch folder) are recorded as they are. ``reuse``:
    folders of earlier fits (the synthetic trial's); one computed from the same inputs
    (:func:`fit_inputs`) stands for the final fit instead of training it again."""
    report = ClassifierReport(recipe=recipe, budget=budget, patch_folder=patch_folder,
        profile=profile.name, arch=cfg.arch, classes=names, geometry=patch_set.geometry.to_dict(),
        train_set=cfg.train_set, train_size=int(len(train.arrays)), train=dataclasses.asdict(cfg),
        device="cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}", hardware=describe(),
        preprocessing=preprocessing_metadata(patch_set.geometry, profile.patching.background_level))
    patch = patch_set.geometry.patch
    if cv and cfg.cv_folds > 1:
        start = time.perf_counter()
        report.cv = cross_validate(train.arrays, train.index, names, cfg, patch)
        report.seconds["cv"] = time.perf_counter() - start
    fitted_folder = reusable_fit(reuse, fit_inputs(patch_set, train, profile, cfg)) if reuse else None
    if fitted_folder is not None:
        log.info("%s: the fit in %s has the same inputs; reused", cfg.arch, fitted_folder)
        model, fitted = load_fit(fitted_folder)
        report.final_history, report.fit, report.parameters = fitted.final_history, fitted.fit, fitted.parameters
        report.decision = fitted.decision
        report.seconds |= {k: v for k, v in fitted.seconds.items() if k in ("fit", "unknown")}
        report.reused_fit = str(fitted_folder)
        return model, report
    start = time.perf_counter()
    val = validation_captures(patch_set, names, cfg)
    final = train_final(train.arrays, train.index, names, cfg, patch, val)
    report.seconds["fit"] = time.perf_counter() - start
    report.final_history = final.history
    report.fit = final.summary()
    report.parameters = count_parameters(final.model)
    start = time.perf_counter()
    model = fit_feature_distance(final.model, *final_training_patches(train.arrays, train.index, names, cfg, val),
                                 len(names), seed=cfg.seed)
    report.decision = decision_of(final, val, cfg, model)
    report.seconds["unknown"] = time.perf_counter() - start
    return model, report


def save_fit(folder: Path | str, model: torch.nn.Module, report: ClassifierReport) -> Path:
    """A fitted candidate's folder, replacing any earlier one whole (atomically)."""
    return save_classifier(folder, model, report.to_dict())


def load_fit(folder: Path | str) -> tuple[torch.nn.Module, ClassifierReport]:
    model, data = load_classifier(folder)
    return model, ClassifierReport.from_dict(data, Path(folder) / REPORT)


def test_stage(folder: Path | str, patch_set, test: tuple[pd.DataFrame, list[np.ndarray]] | None = None,
               model: torch.nn.Module | None = None) -> ClassifierReport:
    """The held-out ORIGINAL captures, decided by the calibrated threshold rule (the paper's
    arg-max rule beside it). ``test``: :func:`test_patches` of ``patch_set`` when already cut."""
    folder = Path(folder)
    if model is None:
        model, report = load_fit(folder)
    else:  # the caller's fitted model: only the report is read
        report = ClassifierReport.load(folder)
    start = time.perf_counter()
    captures, groups = test or test_patches(patch_set)
    metrics = evaluate_images(model, captures, groups, report.classes, threshold=report.threshold)
    curve = threshold_curve(metrics.pop("per_image_probs"), encode(captures["label"], report.classes))
    rule = "threshold rule" if metrics.get("rule") == "threshold" else "Algorithm 1 (arg-max)"
    confusion_matrix_png(metrics["confusion_matrix"], report.classes, folder / "confusion_matrix.png",
                         f"{report.arch}, held-out captures, {rule}")
    atomic_write_text(folder / "threshold_curve.csv", curve.to_csv(index=False))
    threshold_curve_png(curve, folder / "threshold_curve.png", f"{report.arch}: misses vs false alarms")
    report.test = metrics
    report.seconds["test"] = time.perf_counter() - start
    report.save(folder)
    return report


def export_stage(folder: Path | str, patch_set, parity_tol: float = 1e-4,
                 test: tuple[pd.DataFrame, list[np.ndarray]] | None = None, **metadata) -> ClassifierReport:
    """``model.onnx`` with the model card (:func:`model_card`) as metadata.
    The file is written beside the model only after it matched torch within ``parity_tol`` on
    up to 512 held-out patches; on a mismatch it is deleted and :class:`ParityError` raised.
    An int8 file of an earlier export is removed: it belonged to another fp32 model."""
    folder = Path(folder)
    model, report = load_fit(folder)
    start = time.perf_counter()
    (folder / INT8).unlink(missing_ok=True)
    _, groups = test or test_patches(patch_set)
    sample = np.concatenate(groups)[:512] if groups else patch_set.patches[:512]
    staged = folder / f".{ONNX}.staged"
    try:
        export_onnx(model, staged, model_card(report, max_pixels_of(patch_set), **metadata))
        diff = check_parity(model, staged, sample, parity_tol)
        os.replace(staged, folder / ONNX)
    finally:
        staged.unlink(missing_ok=True)
    report.onnx = {"file": ONNX, "parity_max_abs_diff": diff, "parity_tolerance": parity_tol,
                   "parity_patches": int(len(sample))}
    report.seconds["export"] = time.perf_counter() - start
    report.save(folder)
    return report


def quantize_stage(folder: Path | str, patch_set, deploy: DeployConfig, clean_class: str,
                   int8_tolerance: float | None = None) -> ClassifierReport:
    """The precision gate on the validation captures the model's own training drew: int8 static
    quantization of ``model.onnx``, kept as ``model.int8.onnx`` only within
    ``deploy.int8_tolerance`` (or ``int8_tolerance``) of fp32 (smh_ml.export.quantization), and
    OpenVINO bf16 judged the same way within ``deploy.int8_tolerance``; both verdicts go into the
    model card (``fast_paths``) and the report. Without validation captures both are refused
    unmeasured."""
    from smh_ml.export.precision_gate import validation_gate_captures
    from smh_ml.export.quantization import gate_fast_paths

    folder = Path(folder)
    report = ClassifierReport.load(folder)
    start = time.perf_counter()
    gate_captures = validation_gate_captures(patch_set, clean_class, float(report.train.get("val_fraction", 0.0)),
                                             int(report.train.get("seed", 0)))
    gate, bf16 = gate_fast_paths(folder / ONNX, patch_set, clean_class, gate_captures, deploy, int8_tolerance)
    return ClassifierReport.update(folder, {"quantize": time.perf_counter() - start}, bf16=bf16.to_dict(),
                                   int8=dataclasses.asdict(gate) | {"file": INT8 if gate.accepted else None})


def robustness_stage(folder: Path | str, patch_set, severities: dict[str, tuple[float, ...]] = SEVERITIES,
                     test: tuple[pd.DataFrame, list[np.ndarray]] | None = None, seed: int = 0) -> ClassifierReport:
    """Fig. 13 on the exported model (the one that ships), with its decision rule."""
    folder = Path(folder)
    report = ClassifierReport.load(folder)
    if not (folder / ONNX).is_file():
        raise FileNotFoundError(f"{folder / ONNX}: no exported model (run the export stage first)")
    start = time.perf_counter()
    captures, groups = test or test_patches(patch_set)
    sess = load_onnx(folder / ONNX)

    def accuracy(transform):
        return evaluate_images(lambda arrays: onnx_predict(sess, arrays), captures, groups, report.classes,
                               transform, report.threshold)["accuracy"]

    table = robustness_table(accuracy, severities, seed=seed)
    atomic_write_text(folder / "robustness.csv", table.to_csv(index=False))
    plot_robustness(table, folder / "robustness.png", f"{report.arch} robustness")
    return ClassifierReport.update(folder, {"robustness": time.perf_counter() - start},
                                   robustness=table.to_dict(orient="records"))


def select_candidate(reports: dict[str, ClassifierReport]) -> dict:
    """The candidate that ships, chosen on the validation captures (a split of the TRAINING
    captures) and never on the test captures: the highest validation image accuracy at the
    shipped checkpoint, ties to the smaller model. Without validation captures, the mean CV
    accuracy; without either, the first candidate (the recipe's order)."""
    from smh_ml.tracking.promotion import best_candidate

    parameters = {arch: r.parameters for arch, r in reports.items()}
    scores = {arch: r.validation_accuracy for arch, r in reports.items()}
    metric = "validation image accuracy"
    if any(v is None for v in scores.values()):
        scores = {arch: (r.cv or {}).get("summary", {}).get("all", {}).get("mean_accuracy")
                  for arch, r in reports.items()}
        metric = "mean CV patch accuracy"
    if any(v is None for v in scores.values()):
        first = next(iter(reports))
        return {"best": first, "metric": "the recipe's first candidate (no validation captures, no CV)",
                "scores": {}, "parameters": parameters}
    return {"best": best_candidate(scores, parameters), "metric": metric, "scores": scores,
            "parameters": parameters}


SHIPPED_FILES = (REPORT, "model.pt", ONNX, "confusion_matrix.png", "threshold_curve.csv", "threshold_curve.png",
                 "robustness.csv", "robustness.png")


def ship_candidate(candidate: Path | str, out: Path | str) -> Path:
    """Copy a candidate's model files to ``out`` (each replaced atomically), so ``out`` is a
    model folder for ``smh-ml predict --model``; files of an earlier model that this one lacks
    are removed."""
    import shutil

    candidate, out = Path(candidate), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in (*SHIPPED_FILES, INT8):
        source, target = candidate / name, out / name
        if not source.is_file():
            target.unlink(missing_ok=True)
            continue
        staged = out / f".{name}.staged"
        shutil.copy2(source, staged)
        os.replace(staged, target)
    return out


CANDIDATES_DIR = "candidates"


def run_classifier(patch_dir: Path | str, out: Path | str, profile: Profile, cv: bool = True,
                   robustness: bool = True, parity_tol: float = 1e-4,
                   severities: dict[str, tuple[float, ...]] = SEVERITIES,
                   train_dir: Path | str | None = None, archs: list[str] | None = None,
                   overrides: dict[str, Any] | None = None, precision_gate: bool = True) -> ClassifierReport:
    """fit, test, export (the precision gate, and robustness) of the profile's candidates; the
    best on the validation captures ships in ``out``.

    The candidates (:func:`candidates_of`: ``archs``, default the profile's, and on a close
    call the other geometry's) are trained on the same training captures, within
    ``train.budget_minutes`` when the profile sets one. With one candidate ``out`` is its
    folder; with several each has ``out/candidates/<key>/`` and the chosen one's files are
    copied to ``out``. The training set ``profile.train.train_set`` (pta, or pgan) is read from
    ``train_dir`` (default: ``patch_dir``); the test captures always come from ``patch_dir``
    and are used once per candidate, after the choice, for the report. The synthetic trial's
    fits in ``train_dir`` (``smh-ml pgan``) stand for a final fit with the same inputs.
    """
    from smh_ml.data.recipe import recorded_recipe
    from smh_ml.workflows.trial import trial_fits

    candidates = candidates_of(patch_dir, profile, train_dir, archs, overrides)
    names = class_names(set(candidates[0].patch_set.captures["label"]), profile.clean_class)
    cfgs, budget = plan_training(candidates, names, profile, cv)
    kept = {c.key: c for c in candidates if c.key in cfgs}
    recipe = recorded_recipe(patch_dir)
    out = Path(out)
    folders = {key: out if len(cfgs) == 1 else out / CANDIDATES_DIR / key for key in cfgs}
    reports: dict[str, ClassifierReport] = {}
    reuse = trial_fits(train_dir) if train_dir else ()
    for key, c in kept.items():  # with a budget, CV waits for the choice
        model, reports[key] = fit_stage(c.patch_set, c.train, names, c.profile, cfgs[key], cv and budget is None,
                                        recipe, budget, c.patch_folder, reuse)
        save_fit(folders[key], model, reports[key])
    selection = select_candidate(reports) | {"dropped": list((budget or {}).get("dropped", []))}
    best = selection["best"]
    for key in cfgs:
        reports[key].selection = selection
        reports[key].save(folders[key])
    budget_cv(folders[best], kept[best].train, cfgs[best], budget, best)
    tests = {}
    for key, c in kept.items():
        tests.setdefault(c.patch_folder, test_patches(c.patch_set))
        test_stage(folders[key], c.patch_set, tests[c.patch_folder])
    chosen = kept[best]
    report = export_stage(folders[best], chosen.patch_set, parity_tol, tests[chosen.patch_folder])
    if precision_gate:
        report = quantize_stage(folders[best], chosen.patch_set, profile.deploy, profile.clean_class)
    if robustness:
        report = robustness_stage(folders[best], chosen.patch_set, severities, tests[chosen.patch_folder],
                                  seed=cfgs[best].seed)
    if folders[best] != out:
        ship_candidate(folders[best], out)
    return report
