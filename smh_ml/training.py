"""Classifier training and evaluation (paper V-D).

Adam (lr 1e-4), cross-entropy, Keras-style L2 (0.01) on conv weights, batch 128, seeded.
Stratified k-fold cross-validation on the training set, grouped by capture so the patches
(and augmented copies) of one capture never sit on both sides of a fold; each fold is also
scored on its real patches alone, since augmented or synthetic patches flatter a score.
The final test is image-level, on the held-out ORIGINAL captures, through Algorithm 1.
"""

from __future__ import annotations

import logging
import os
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

from smh_ml.decision import decide_all
from smh_ml.models import build
from smh_ml.profiles import TrainConfig

log = logging.getLogger(__name__)


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
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1], the models' input."""
    return torch.from_numpy(np.array(arrays, dtype=np.float32)).unsqueeze(1).div_(255.0)


def l2_penalty(model: nn.Module) -> torch.Tensor:
    terms = [m.weight.pow(2).sum() for m in model.modules() if isinstance(m, nn.Conv2d)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)


def fit(model: nn.Module, arrays: np.ndarray, targets: np.ndarray, cfg: TrainConfig,
        desc: str = "train", on_epoch: Callable[[int, dict], None] | None = None) -> FitResult:
    """Train ``model`` on uint8 patches with integer targets; returns it with its loss history."""
    dev = device()
    seed_everything(cfg.seed)
    model = model.to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = to_input(arrays), torch.as_tensor(targets, dtype=torch.long)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    bar = tqdm(range(cfg.epochs), desc=desc, leave=False, disable=None)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(x_all), generator=generator)
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2 and len(order) > 1:  # BatchNorm needs two samples
                continue
            x, y = x_all[idx].to(dev), y_all[idx].to(dev)
            logits = model(x)
            loss = loss_fn(logits, y) + cfg.l2 * l2_penalty(model)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        record = {"epoch": epoch + 1, "loss": total / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['train_accuracy']:.3f}")
        log.info("%s epoch %d/%d loss %.4f accuracy %.4f", desc, epoch + 1, cfg.epochs,
                 record["loss"], record["train_accuracy"])
        if on_epoch:
            on_epoch(epoch, record)
    if cfg.recalibrate_bn:
        recalibrate_batchnorm(model, x_all, cfg.batch_size)
    return FitResult(model.eval(), history)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> nn.Module:
    """Recompute BatchNorm running statistics as a plain average over ``inputs`` with the
    final weights (torch's ``update_bn``); the running averages kept during a short training
    run still reflect earlier weights. A model without BatchNorm is left as it is."""
    from torch.optim.swa_utils import update_bn

    dev = next(model.parameters()).device
    starts = range(0, len(inputs), batch_size)
    # like fit(): a last batch of one sample cannot give batch statistics
    batches = (inputs[s:s + batch_size] for s in starts if len(inputs) - s > 1 or len(inputs) == 1)
    update_bn(batches, model, device=dev)
    return model


@torch.no_grad()
def predict_proba(model: nn.Module, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
    dev = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, len(arrays), batch_size):
        x = to_input(arrays[start:start + batch_size]).to(dev)
        out.append(torch.softmax(model(x), dim=1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


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


def cross_validate(arrays: np.ndarray, index: pd.DataFrame, names: list[str], cfg: TrainConfig,
                   patch: int, on_fold: Callable[[int, dict], None] | None = None) -> dict:
    """Stratified k-fold CV grouped by capture; metrics per fold on all and on real patches."""
    y = encode(index["label"], names)
    origin = index.get("origin", pd.Series("real", index=index.index)).to_numpy()
    folds = []
    for k, (train_idx, val_idx) in enumerate(fold_indices(index, y, cfg.cv_folds, cfg.seed)):
        seed_everything(cfg.seed + k)  # the initial weights are part of the seeded run
        model = build(cfg.arch, len(names), patch)
        fitted = fit(model, arrays[train_idx], y[train_idx], cfg, desc=f"fold {k + 1}/{cfg.cv_folds}")
        predicted = predict_proba(fitted.model, arrays[val_idx]).argmax(1)
        real = origin[val_idx] == "real"
        fold = {"fold": k + 1, "train_size": int(len(train_idx)), "val_size": int(len(val_idx)),
                "all": classification_metrics(y[val_idx], predicted, names),
                "real_only": classification_metrics(y[val_idx][real], predicted[real], names),
                "history": fitted.history}
        folds.append(fold)
        if on_fold:
            on_fold(k, fold)
    summary = {}
    for part in ("all", "real_only"):
        accs = np.array([f[part]["accuracy"] for f in folds])
        summary[part] = {"mean_accuracy": float(accs.mean()), "std_accuracy": float(accs.std()),
                         "fold_accuracies": accs.tolist()}
    return {"folds": folds, "summary": summary, "k": cfg.cv_folds}


def test_patches(patch_set) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The held-out ORIGINAL captures and, for each, its patches in row-major order."""
    captures = patch_set.captures[patch_set.captures["split"] == "test"].reset_index(drop=True)
    by_capture = patch_set.index.groupby("capture_id")["patch_index"].apply(list)
    groups = [patch_set.patches[np.sort(by_capture[cid])] for cid in captures["capture_id"]]
    return captures, groups


def evaluate_images(model: nn.Module | Callable[[np.ndarray], np.ndarray], captures: pd.DataFrame,
                    groups: list[np.ndarray], names: list[str],
                    transform: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Image-level test through Algorithm 1: one batch of patches per capture.

    ``model`` is a torch module or any function from uint8 patches to probabilities (an
    ONNX session, say), so fp32 and int8 exports are tested exactly like the torch model.
    """
    if isinstance(model, nn.Module):
        module = model

        def model(arrays: np.ndarray) -> np.ndarray:
            return predict_proba(module, arrays, batch_size=len(arrays))

    per_image = [model(transform(g) if transform else g) for g in groups]
    truth = encode(captures["label"], names)
    predicted, deciding = decide_all(per_image, clean_index=0)
    metrics = classification_metrics(truth, predicted, names)
    metrics["decisions"] = [{"capture_id": cid, "label": names[t], "predicted": names[p],
                             "patch": d} for cid, t, p, d in zip(captures["capture_id"], truth,
                                                                 predicted, deciding)]
    metrics["per_image_probs"] = per_image
    return metrics


def train_final(arrays: np.ndarray, index: pd.DataFrame, names: list[str], cfg: TrainConfig,
                patch: int) -> FitResult:
    """The model that ships: trained on the whole training set."""
    seed_everything(cfg.seed)
    return fit(build(cfg.arch, len(names), patch), arrays, encode(index["label"], names), cfg,
               desc="final model")


def state_dict_cpu(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
