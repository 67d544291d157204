"""Unknown defects, measured by leaving one class out.

A defect type the model never saw is forced into a known class by Algorithm 1. The unknown
score (:func:`smh_ml.decision.unknown_scores`: the largest distance of a capture's patch
features to the nearest training class) says how unlike every training class it looks; its
threshold is calibrated on the validation captures for a target share of
known captures flagged (:data:`smh_ml.decision.UNKNOWN_RATE`). Whether it finds new types is
measured by training without class X (neither its training nor its validation captures)
and scoring the held-out test captures: X's should be flagged, the known classes' not.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from smh_ml.config.schema import Profile, TrainConfig
from smh_ml.data.datasets import PatchSet, build_pta
from smh_ml.decision import UNKNOWN_RATE, calibrate_unknown, unknown_scores
from smh_ml.training.loop import (
    class_names,
    evaluate_images,
    final_training_patches,
    test_patches,
    train_final,
    validation_captures,
)
from smh_ml.training.unknown import capture_distances, fit_feature_distance
from smh_ml.workflows.classifier import decision_of


def without_class(patch_set: PatchSet, label: str) -> PatchSet:
    """``patch_set`` with every capture of class ``label`` (and their patches) taken out of
    TRAINING; its test captures stay, so the held-out set still holds the unseen type."""
    gone = (patch_set.captures["label"] == label) & (patch_set.captures["split"] == "train")
    captures = patch_set.captures[~gone].reset_index(drop=True)
    kept = patch_set.index[patch_set.index["capture_id"].isin(captures["capture_id"])]
    index = kept.reset_index(drop=True)
    index["patch_index"] = np.arange(len(index))
    index["capture_index"] = index["capture_id"].map(dict(zip(captures["capture_id"], range(len(captures)))))
    images = patch_set.images[np.flatnonzero(~gone.to_numpy())]
    return PatchSet(patch_set.geometry, captures, patch_set.patches[kept["patch_index"].to_numpy()], index, images)


def leave_one_out(patch_set: PatchSet, profile: Profile, label: str, cfg: TrainConfig,
                  rate: float = UNKNOWN_RATE) -> dict:
    """Train ``cfg`` without class ``label``, calibrate the unknown threshold on the validation
    captures, and score the held-out captures: AUROC of the unknown score (``label``'s test
    captures against the known ones), the share of ``label``'s captures flagged, the share of
    known captures flagged, and the known captures' accuracy before and after flagging."""
    start = time.perf_counter()
    reduced = without_class(patch_set, label)
    names = class_names(set(reduced.captures.loc[reduced.captures["split"] == "train", "label"]), profile.clean_class)
    pta = build_pta(reduced, profile.clean_class, profile.augment)
    val = validation_captures(reduced, names, cfg)
    fitted = train_final(pta.arrays, pta.index, names, cfg, reduced.geometry.patch, val)
    module = fit_feature_distance(fitted.model, *final_training_patches(pta.arrays, pta.index, names, cfg, val),
                                  len(names), seed=cfg.seed)
    # known captures are decided as the shipped model decides them: by its calibrated thresholds
    decision = decision_of(fitted, val, cfg, module)
    threshold = calibrate_unknown(capture_distances(module, val.groups), rate)
    defect_threshold = decision["threshold"]
    captures, groups = test_patches(reduced)
    new = (captures["label"] == label).to_numpy()
    known_captures = captures[~new].reset_index(drop=True)
    known_groups = [g for g, n in zip(groups, new) if not n]
    metrics = evaluate_images(module, known_captures, known_groups, names, threshold=defect_threshold)
    metrics.pop("per_image_probs")
    known_scores = unknown_scores(capture_distances(module, known_groups))
    new_scores = unknown_scores(capture_distances(module, [g for g, n in zip(groups, new) if n]))
    flagged_known = known_scores >= threshold
    right = np.array([d["label"] == d["predicted"] for d in metrics["decisions"]])
    return {"left_out": label, "classes": names, "threshold": threshold, "target_rate": rate,
            "unknown_captures": int(new.sum()), "known_captures": int((~new).sum()),
            "auroc": float(roc_auc_score(np.r_[np.zeros(len(known_scores)), np.ones(len(new_scores))],
                                         np.r_[known_scores, new_scores])),
            "unknown_flagged": float((new_scores >= threshold).mean()),
            "known_flagged": float(flagged_known.mean()),
            "known_accuracy": float(right.mean()),
            "known_accuracy_unflagged": float((right & ~flagged_known).mean()),
            "steps": fitted.steps, "seconds": round(time.perf_counter() - start, 1),
            "cfg": dataclasses.asdict(cfg)}
