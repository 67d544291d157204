"""Image-level figures of the decision rule on a labelled image set (training side).

Defect-vs-clean ROC AUC of the images' defect scores, defect recall and false-alarm rate at
a threshold, and the threshold calibrated for a false-alarm target with those figures. Kept
apart from :mod:`smh_ml.decision` (the rule itself), which the deploy path imports without
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from smh_ml.decision import calibrate_threshold, image_defect_scores


def image_report(per_image: Sequence[np.ndarray], labels: Sequence[int], clean_index: int = 0,
                 threshold: float | None = None) -> dict:
    """Defect-vs-clean view of an image set: ROC AUC of the defect score, and at
    ``threshold`` the defect recall and false-alarm rate."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    defect = labels != clean_index
    scores = image_defect_scores(per_image, clean_index)
    both = 0 < defect.sum() < len(defect)
    out = {"auroc": float(roc_auc_score(defect, scores)) if both else float("nan"),
           "defect_images": int(defect.sum()), "clean_images": int((~defect).sum()),
           "majority_baseline": float(max(np.bincount(labels)) / len(labels)) if len(labels) else float("nan")}
    if threshold is not None:
        flagged = scores >= threshold
        out |= {"threshold": float(threshold),
                "defect_recall": float(flagged[defect].mean()) if defect.any() else float("nan"),
                "false_alarm_rate": float(flagged[~defect].mean()) if (~defect).any() else float("nan")}
    return out


def calibrate(per_image: Sequence[np.ndarray], labels: Sequence[int], target_false_alarm: float,
              clean_index: int = 0) -> dict:
    """Calibrate the threshold on a labelled image set (the validation captures) and report
    the set at it: ``threshold``, ``target_false_alarm`` and :func:`image_report`'s figures."""
    labels = np.asarray(labels)
    scores = image_defect_scores(per_image, clean_index)
    if not (labels == clean_index).any():  # a defect-only capture set: nothing to calibrate on
        return {"threshold": None, "target_false_alarm": target_false_alarm,
                "note": "no clean validation images: the arg-max rule decides",
                **image_report(per_image, labels, clean_index)}
    threshold = calibrate_threshold(scores[labels == clean_index], target_false_alarm)
    return {"threshold": threshold, "target_false_alarm": target_false_alarm,
            **image_report(per_image, labels, clean_index, threshold)}
