"""Classifier training and evaluation (paper V-D).

Adam (lr 1e-4), cross-entropy, Keras-style L2 (0.01) on conv weights, batch 128, seeded.
Stratified k-fold cross-validation on the training set, grouped by capture so the patches
(and augmented copies) of one capture never sit on both sides of a fold; each fold is also
scored on its real patches alone, since augmented or synthetic patches flatter a score.
The final test is image-level, on the held-out ORIGINAL captures, through Algorithm 1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)
from tqdm.auto import tqdm

from smh_ml.config.schema import TrainConfig
from smh_ml.data.batch_augment import augment_batch
from smh_ml.decision import decide_all
from smh_ml.deploy.card import to_input as card_input
from smh_ml.evaluation.image_metrics import calibrate, image_report
from smh_ml.hardware import training_precision
from smh_ml.models import build
from smh_ml.training.budget import StepCost

log = logging.getLogger(__name__)

BN_SAMPLES = 512
"""Training inputs (fixed, no augmentation) over which BatchNorm statistics are recomputed."""


def class_names(labels, clean_class: str) -> list[str]:
    """Class order used everywhere: the clean class first (index 0), then the rest sorted."""
    others = sorted(set(labels) - {clean_class})
    return [clean_class, *others]


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(os.cpu_count() or 1)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def to_input(arrays: np.ndarray) -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]: the model card's input contract
    (:func:`smh_ml.deploy.card.to_input`), as a tensor."""
    return torch.from_numpy(card_input(arrays))


def l2_penalty(model: nn.Module) -> torch.Tensor:
    terms = [m.weight.pow(2).sum() for m in model.modules() if isinstance(m, nn.Conv2d)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@dataclass
class ValidationCaptures:
    """Whole TRAINING captures held out of fitting: every patch of each, in row-major order,
    so a validation pass decides images exactly as the held-out test does."""

    captures: pd.DataFrame
    groups: list[np.ndarray]
    truth: np.ndarray
    """Class index of each capture."""


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_step: int | None = None
    steps: int = 0
    precision: str = "fp32"
    patches_per_second: float = 0.0
    train_seconds: float = 0.0
    val_probs: list[np.ndarray] | None = None
    """Per validation capture, the selected model's patch probabilities."""
    step_seconds: list[float] = field(default_factory=list)
    """Wall seconds of each optimiser step (the budget's warm-up reads them)."""

    def summary(self) -> dict:
        return {"steps": self.steps, "best_step": self.best_step, "precision": self.precision,
                "patches_per_second": round(self.patches_per_second, 1),
                "train_seconds": round(self.train_seconds, 1)}


def total_steps(cfg: TrainConfig, n: int) -> int:
    return cfg.steps if cfg.steps > 0 else cfg.epochs * max(1, math.ceil(n / cfg.batch_size))


class _Batches:
    """Indices of the next batch: class-balanced draws, or shuffled passes over the set."""

    def __init__(self, targets: torch.Tensor, batch_size: int, balance: float, generator: torch.Generator):
        self.targets, self.batch_size, self.balanced, self.generator = targets, batch_size, balance > 0, generator
        counts = torch.bincount(targets).clamp(min=1).double()
        self.weights = counts.pow(-balance)[targets]
        self.order, self.cursor = torch.empty(0, dtype=torch.long), 0

    def __next__(self) -> torch.Tensor:
        n = len(self.targets)
        if self.balanced:
            return torch.multinomial(self.weights, min(self.batch_size, max(n, 2)), replacement=True,
                                     generator=self.generator)
        if self.cursor + min(self.batch_size, n) > len(self.order):
            self.order, self.cursor = torch.randperm(n, generator=self.generator), 0
        idx = self.order[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx


def _optimiser(model: nn.Module, cfg: TrainConfig, steps: int):
    if cfg.optimizer == "adamw":
        optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}: adam or adamw")
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=cfg.lr, total_steps=max(steps, 2), pct_start=min(max(cfg.warmup, 0.01), 0.9),
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1e3)
    elif cfg.schedule == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}: constant or onecycle")
    return optimiser, scheduler


def validate_images(model: nn.Module, val: ValidationCaptures,
                    target_false_alarm: float) -> tuple[dict, list[np.ndarray]]:
    """Image accuracy on the validation captures with the threshold calibrated on them (the
    rule that ships), the paper's arg-max rule beside it, and defect-vs-clean AUROC."""
    probs = predict_groups(model, val.groups)
    calibrated = calibrate(probs, val.truth, target_false_alarm)
    decided, _ = decide_all(probs, clean_index=0, threshold=calibrated["threshold"])
    plain, _ = decide_all(probs, clean_index=0)
    return {"val_accuracy": float((decided == val.truth).mean()),
            "val_accuracy_argmax": float((plain == val.truth).mean()),
            "val_auroc": calibrated["auroc"], "val_threshold": calibrated["threshold"]}, probs


def fit(model: nn.Module, arrays: np.ndarray, targets: np.ndarray, cfg: TrainConfig,
        desc: str = "train", on_epoch: Callable[[int, dict], None] | None = None,
        val: ValidationCaptures | None = None) -> FitResult:
    """Train ``model`` on uint8 patches with integer targets for ``total_steps`` optimiser steps.

    With ``val``, the checkpoint with the best validation image accuracy (then AUROC; later
    steps win ties) is the one returned. ``on_epoch`` is called with each history record
    (one per validation pass, or per epoch's worth of steps without one).
    """
    dev = device()
    seed_everything(cfg.seed)
    precision = training_precision(cfg.precision, dev.type == "cuda")
    model = model.to(dev).to(memory_format=torch.channels_last)
    steps = total_steps(cfg, len(arrays))
    optimiser, scheduler = _optimiser(model, cfg, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    x_all = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.uint8)).unsqueeze(1)
    y_all = torch.tensor(np.asarray(targets), dtype=torch.long)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = _Batches(y_all, cfg.batch_size, cfg.balance, generator)
    every = cfg.eval_every if cfg.eval_every > 0 else max(1, math.ceil(len(arrays) / cfg.batch_size))
    calibration = x_all[torch.randperm(len(x_all), generator=torch.Generator().manual_seed(cfg.seed))[:BN_SAMPLES]]
    history, best, best_key, best_probs = [], None, None, None
    total = correct = seen = 0.0
    train_seconds, step_times = 0.0, []
    bar = tqdm(range(1, steps + 1), desc=desc, leave=False, disable=None)
    for step in bar:
        t0 = time.perf_counter()
        model.train()
        idx = next(batches)
        if len(idx) < 2:  # BatchNorm needs two samples
            continue
        x = x_all[idx].to(dev, torch.float32).div_(255.0)
        y = y_all[idx].to(dev)
        if cfg.online_augment:
            x = augment_batch(x, cfg.brightness, cfg.contrast, cfg.shift, generator)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if cfg.l2:
            loss = loss + cfg.l2 * l2_penalty(model)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        step_times.append(time.perf_counter() - t0)
        train_seconds += step_times[-1]
        total += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if step % every and step != steps:
            continue
        record = {"step": step, "epoch": round(step * cfg.batch_size / len(arrays), 2),
                  "lr": scheduler.get_last_lr()[0], "loss": total / max(seen, 1),
                  "train_accuracy": correct / max(seen, 1)}
        total = correct = seen = 0.0
        if cfg.recalibrate_bn and (val is not None or step == steps):  # what is evaluated or returned
            recalibrate_batchnorm(model, calibration.float().div(255.0), cfg.batch_size)
        if val is not None:
            scores, probs = validate_images(model, val, cfg.target_false_alarm)
            record |= scores
            key = (scores["val_accuracy"], np.nan_to_num(scores["val_auroc"]))
            if best_key is None or key >= best_key:
                best_key, best, best_probs = key, (step, state_dict_cpu(model)), probs
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_accuracy']:.3f}",
                        val=f"{record.get('val_accuracy', float('nan')):.3f}")
        log.info("%s step %d/%d %s", desc, step, steps,
                 " ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step" and v is not None))
        if on_epoch:
            on_epoch(len(history) - 1, record)
    best_step = None
    if best is not None:
        best_step = best[0]
        model.load_state_dict(best[1])
    result = FitResult(model.eval(), history, best_step, steps, precision,
                       steps * cfg.batch_size / max(train_seconds, 1e-9), train_seconds, best_probs, step_times)
    log.info("%s: %s", desc, result.summary())
    return result


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> nn.Module:
    """Recompute BatchNorm running statistics as a plain average over ``inputs`` with the
    current weights (torch's ``update_bn``); running averages kept during a short training
    run still reflect earlier weights. A model without BatchNorm is left as it is."""
    from torch.optim.swa_utils import update_bn

    dev = next(model.parameters()).device
    starts = range(0, len(inputs), batch_size)
    # a last batch of one sample cannot give batch statistics
    batches = (inputs[s:s + batch_size] for s in starts if len(inputs) - s > 1 or len(inputs) == 1)
    update_bn(batches, model, device=dev)
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
    dev = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(arrays), batch_size):
        x = to_input(arrays[start:start + batch_size]).to(dev).contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(model(x), dim=1).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict_groups(model: nn.Module, groups: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Patch probabilities per image: all images' patches in large batches, split back."""
    if not groups:
        return []
    probs = predict_proba(model, np.concatenate(groups), batch_size)
    return np.split(probs, np.cumsum([len(g) for g in groups])[:-1])


def classification_metrics(y_true, y_pred, names: list[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 and the confusion matrix (torchmetrics)."""
    n = len(names)
    t = torch.as_tensor(np.asarray(y_true), dtype=torch.long)
    p = torch.as_tensor(np.asarray(y_pred), dtype=torch.long)
    kw = {"num_classes": n, "average": "none", "zero_division": 0}
    precision = MulticlassPrecision(**kw)(p, t).tolist()
    recall = MulticlassRecall(**kw)(p, t).tolist()
    f1 = MulticlassF1Score(**kw)(p, t).tolist()
    return {
        "accuracy": float(MulticlassAccuracy(num_classes=n, average="micro")(p, t)),
        "n": int(len(t)),
        "per_class": {name: {"precision": precision[i], "recall": recall[i], "f1": f1[i],
                             "support": int((t == i).sum())} for i, name in enumerate(names)},
        "confusion_matrix": MulticlassConfusionMatrix(num_classes=n)(p, t).tolist(),
    }


def encode(labels: pd.Series, names: list[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(names)}
    unknown = set(labels) - set(lookup)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the classes {names}")
    return labels.map(lookup).to_numpy(dtype=np.int64)


def _fold_groups(index: pd.DataFrame) -> np.ndarray:
    groups = index["capture_id"].astype(str).to_numpy().copy()
    synthetic = index.get("origin", pd.Series("real", index=index.index)).to_numpy() == "synthetic"
    groups[synthetic] = [f"synthetic-{i}" for i in np.flatnonzero(synthetic)]
    return groups


def fold_indices(index: pd.DataFrame, y: np.ndarray, k: int,
                 seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k folds grouped by capture (synthetic patches are their own groups)."""
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, _fold_groups(index)))


def training_rows(index: pd.DataFrame, cfg: TrainConfig,
                  exclude_captures: set[str] | None = None) -> np.ndarray:
    """Positions of the training-set rows a fit uses: never a validation capture's patches,
    and no fixed augmented copies when augmentation happens on the fly."""
    keep = np.ones(len(index), dtype=bool)
    origin = index.get("origin", pd.Series("real", index=index.index)).to_numpy()
    if cfg.online_augment:
        keep &= origin != "augmented"
    if exclude_captures:
        keep &= ~index["capture_id"].astype(str).isin(exclude_captures).to_numpy()
    return np.flatnonzero(keep)


def cross_validate(arrays: np.ndarray, index: pd.DataFrame, names: list[str], cfg: TrainConfig,
                   patch: int, on_fold: Callable[[int, dict], None] | None = None) -> dict:
    """Stratified k-fold CV grouped by capture; metrics per fold on all and on real patches.
    Each fold trains with the profile's recipe for its full step budget (no checkpoint
    selection: the fold's held-out part is what scores it)."""
    rows = training_rows(index, cfg)
    arrays, index = arrays[rows], index.iloc[rows].reset_index(drop=True)
    y = encode(index["label"], names)
    origin = index.get("origin", pd.Series("real", index=index.index)).to_numpy()
    folds = []
    for k, (train_idx, val_idx) in enumerate(fold_indices(index, y, cfg.cv_folds, cfg.seed)):
        seed_everything(cfg.seed + k)  # the initial weights are part of the seeded run
        fitted = fit(new_model(cfg, len(names), patch), arrays[train_idx], y[train_idx], cfg,
                     desc=f"fold {k + 1}/{cfg.cv_folds}")
        predicted = predict_proba(fitted.model, arrays[val_idx]).argmax(1)
        real = origin[val_idx] == "real"
        fold = {"fold": k + 1, "train_size": int(len(train_idx)), "val_size": int(len(val_idx)),
                "all": classification_metrics(y[val_idx], predicted, names),
                "real_only": classification_metrics(y[val_idx][real], predicted[real], names),
                "history": fitted.history, "fit": fitted.summary()}
        folds.append(fold)
        if on_fold:
            on_fold(k, fold)
    summary = {}
    for part in ("all", "real_only"):
        accs = np.array([f[part]["accuracy"] for f in folds])
        summary[part] = {"mean_accuracy": float(accs.mean()), "std_accuracy": float(accs.std()),
                         "fold_accuracies": accs.tolist()}
    return {"folds": folds, "summary": summary, "k": cfg.cv_folds}


def capture_groups(patch_set, captures: pd.DataFrame) -> list[np.ndarray]:
    """For each capture row, all of its patches in row-major order (Algorithm 1's input)."""
    by_capture = patch_set.index.groupby("capture_id")["patch_index"].apply(list)
    return [patch_set.patches[np.sort(by_capture[cid])] for cid in captures["capture_id"]]


def test_patches(patch_set) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The held-out ORIGINAL captures and, for each, its patches in row-major order."""
    captures = patch_set.captures[patch_set.captures["split"] == "test"].reset_index(drop=True)
    return captures, capture_groups(patch_set, captures)


def validation_captures(patch_set, names: list[str], cfg: TrainConfig) -> ValidationCaptures | None:
    """``cfg.val_fraction`` of the TRAINING captures per class (whole captures, stratified,
    seeded), or None when the fraction is 0. Test captures are never among them."""
    from smh_ml.data.splits import split_by_capture

    if cfg.val_fraction <= 0:
        return None
    train = patch_set.captures[patch_set.captures["split"] == "train"]
    chosen = split_by_capture(train, cfg.val_fraction, cfg.seed + 1) == "test"
    captures = train[chosen.to_numpy()].reset_index(drop=True)
    has_clean = (encode(train["label"], names) == 0).any()  # False for a defect-only capture set
    if captures.empty or (has_clean and (encode(captures["label"], names) == 0).sum() == 0):
        raise ValueError(f"val_fraction {cfg.val_fraction} leaves no clean validation capture; raise it")
    return ValidationCaptures(captures, capture_groups(patch_set, captures), encode(captures["label"], names))


def evaluate_images(model: nn.Module | Callable[[np.ndarray], np.ndarray], captures: pd.DataFrame,
                    groups: list[np.ndarray], names: list[str],
                    transform: Callable[[np.ndarray], np.ndarray] | None = None,
                    threshold: float | None = None) -> dict:
    """Image-level test through Algorithm 1: one batch of patches per capture.

    ``model`` is a torch module or any function from uint8 patches to probabilities (an
    ONNX runtime, say), so fp32 and int8 exports are tested exactly like the torch model.
    With ``threshold`` the decision is the threshold rule, and the paper's plain arg-max rule
    is reported beside it under ``argmax``; ``image`` holds AUROC, recall and false alarms.
    """
    if isinstance(model, nn.Module):
        module = model

        def model(arrays: np.ndarray) -> np.ndarray:
            return predict_proba(module, arrays, batch_size=len(arrays))

    per_image = [model(transform(g) if transform else g) for g in groups]
    truth = encode(captures["label"], names)
    predicted, deciding = decide_all(per_image, clean_index=0, threshold=threshold)
    metrics = classification_metrics(truth, predicted, names)
    metrics["rule"] = "argmax" if threshold is None else "threshold"
    metrics["image"] = image_report(per_image, truth, 0, threshold)
    if threshold is not None:
        plain, _ = decide_all(per_image, clean_index=0)
        metrics["argmax"] = classification_metrics(truth, plain, names)
    metrics["decisions"] = [{"capture_id": cid, "label": names[t], "predicted": names[p],
                             "patch": d} for cid, t, p, d in zip(captures["capture_id"], truth,
                                                                 predicted, deciding)]
    metrics["per_image_probs"] = per_image
    return metrics


def new_model(cfg: TrainConfig, num_classes: int, patch: int) -> nn.Module:
    """A fresh classifier as ``cfg`` describes it (architecture, ImageNet start, test-time flips)."""
    return build(cfg.arch, num_classes, patch, pretrained=cfg.pretrained, flip_average=cfg.flip_average)


def train_final(arrays: np.ndarray, index: pd.DataFrame, names: list[str], cfg: TrainConfig,
                patch: int, val: ValidationCaptures | None = None) -> FitResult:
    """The model that ships: trained on the training set minus the validation captures,
    the best checkpoint on them kept (the last one without ``val``)."""
    seed_everything(cfg.seed)
    return fit(new_model(cfg, len(names), patch), *final_training_patches(arrays, index, names, cfg, val), cfg,
               desc="final model", val=val)


def final_training_patches(arrays: np.ndarray, index: pd.DataFrame, names: list[str], cfg: TrainConfig,
                           val: ValidationCaptures | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The patches the final model learns from (the validation captures' left out) and their
    class indices."""
    exclude = set(val.captures["capture_id"].astype(str)) if val is not None else None
    rows = training_rows(index, cfg, exclude)
    return arrays[rows], encode(index["label"].iloc[rows], names)


WARMUP_STEPS = 2
"""Untimed first steps of a warm-up (oneDNN picks and caches its kernels there)."""
TIMED_STEPS = 4


def measure_step_cost(arrays: np.ndarray, index: pd.DataFrame, names: list[str], cfg: TrainConfig,
                      patch: int, val: ValidationCaptures | None = None) -> StepCost:
    """A short warm-up of ``cfg``'s candidate on the real training patches: the median
    seconds of an optimiser step after :data:`WARMUP_STEPS`, and of one validation pass."""
    rows = training_rows(index, cfg)
    warm = dataclasses.replace(cfg, steps=WARMUP_STEPS + TIMED_STEPS, eval_every=0, recalibrate_bn=False)
    seed_everything(cfg.seed)
    fitted = fit(new_model(cfg, len(names), patch), arrays[rows], encode(index["label"].iloc[rows], names),
                 warm, desc=f"warm-up {cfg.arch}")
    eval_seconds = 0.0
    if val is not None:
        start = time.perf_counter()
        if cfg.recalibrate_bn:
            sample = torch.from_numpy(np.ascontiguousarray(arrays[rows][:BN_SAMPLES])).unsqueeze(1)
            recalibrate_batchnorm(fitted.model, sample.float().div(255.0), cfg.batch_size)
        validate_images(fitted.model, val, cfg.target_false_alarm)
        eval_seconds = time.perf_counter() - start
    return StepCost(cfg.arch, total_steps(cfg, len(rows)), cfg.eval_every,
                    float(np.median(fitted.step_seconds[WARMUP_STEPS:])), eval_seconds, cfg.batch_size)


def state_dict_cpu(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
