"""Algorithm 1 (paper III-C): one decision per image from the predictions of its patches.

If every patch is predicted clean, the image is clean. Otherwise, among the patches
predicted as a defect class, the most probable one decides the image's class. An optional
threshold on the defect probability trades misses against false alarms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def decide(probs: np.ndarray, clean_index: int = 0,
           threshold: float | None = None) -> tuple[int, int | None]:
    """Decide one image from its (patches, classes) probabilities.

    Returns (class index, deciding patch index), or (clean_index, None) when no patch is a
    defect. Without ``threshold`` a patch is a defect patch when its arg-max is a defect
    class; with it, when its most probable defect class reaches ``threshold``. Ties go to the
    lowest patch index, then the lowest class index.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"expected a non-empty (patches, classes) array, got shape {probs.shape}")
    defect = np.delete(np.arange(probs.shape[1]), clean_index)
    if defect.size == 0:
        return clean_index, None
    defect_probs = probs[:, defect]
    best_defect = defect_probs.max(axis=1)
    if threshold is None:
        is_defect = probs.argmax(axis=1) != clean_index
    else:
        is_defect = best_defect >= threshold
    if not is_defect.any():
        return clean_index, None
    scores = np.where(is_defect, best_defect, -np.inf)
    patch = int(np.argmax(scores))
    return int(defect[np.argmax(defect_probs[patch])]), patch


def decide_all(per_image: Sequence[np.ndarray], clean_index: int = 0,
               threshold: float | None = None) -> tuple[np.ndarray, list[int | None]]:
    decisions = [decide(p, clean_index, threshold) for p in per_image]
    return np.array([d[0] for d in decisions], dtype=np.int64), [d[1] for d in decisions]


def threshold_curve(per_image: Sequence[np.ndarray], labels: Sequence[int], clean_index: int = 0,
                    thresholds: Sequence[float] | None = None) -> pd.DataFrame:
    """Recall (defect images flagged) and false-alarm rate (clean images flagged) per threshold."""
    labels = np.asarray(labels)
    thresholds = np.linspace(0.05, 0.95, 19) if thresholds is None else thresholds
    rows = []
    for t in thresholds:
        predicted, _ = decide_all(per_image, clean_index, float(t))
        flagged = predicted != clean_index
        defect = labels != clean_index
        rows.append({
            "threshold": float(t),
            "defect_recall": float(flagged[defect].mean()) if defect.any() else float("nan"),
            "false_alarm_rate": float(flagged[~defect].mean()) if (~defect).any() else float("nan"),
            "accuracy": float((predicted == labels).mean()),
        })
    return pd.DataFrame(rows)


def image_defect_scores(per_image: Sequence[np.ndarray], clean_index: int = 0) -> np.ndarray:
    """Per image, the score the threshold rule compares: the highest defect-class probability
    over its patches. An image is flagged at threshold t exactly when its score >= t."""
    scores = []
    for probs in per_image:
        probs = np.asarray(probs, dtype=np.float64)
        scores.append(float(np.delete(probs, clean_index, axis=1).max()) if probs.shape[1] > 1 else 0.0)
    return np.array(scores)


def calibrate_threshold(clean_scores: Sequence[float], target_false_alarm: float,
                        ceiling: float | None = 1.0) -> float:
    """The lowest threshold whose false-alarm rate on ``clean_scores`` (the defect scores of
    clean validation images) is at most ``target_false_alarm``: at most
    floor(target * n) clean images reach it. A low threshold keeps defect recall high.
    ``ceiling``: the largest threshold (1 for probabilities; None for unbounded scores)."""
    scores = np.sort(np.asarray(clean_scores, dtype=np.float64))[::-1]
    if scores.size == 0:
        raise ValueError("calibrating a threshold needs at least one clean validation image")
    if not 0.0 <= target_false_alarm < 1.0:
        raise ValueError(f"target false-alarm rate must be in [0, 1), got {target_false_alarm}")
    allowed = int(np.floor(target_false_alarm * scores.size + 1e-9))
    threshold = float(np.nextafter(scores[allowed], np.inf))
    return threshold if ceiling is None else min(threshold, ceiling)


UNKNOWN_RATE = 0.05
"""Share of known-class validation captures the unknown threshold lets through as unknown:
the review folder's load on a line whose defects are all known."""


def unknown_scores(per_image_distances: Sequence[np.ndarray]) -> np.ndarray:
    """Per image, how unlike every training class it looks: the largest distance of its patches'
    features to the nearest training class (smh_ml.models.feature_distance). A new kind of
    defect need not move the probabilities (a model that never saw pits calls them clean,
    confidently), but its patch lands away from every class the features know."""
    return np.array([float(np.max(d)) if len(d) else 0.0 for d in per_image_distances])


def calibrate_unknown(per_image_distances: Sequence[np.ndarray], rate: float = UNKNOWN_RATE) -> float:
    """The unknown threshold: at most ``rate`` of the known-class validation captures (their
    patch distances) reach it."""
    return calibrate_threshold(unknown_scores(per_image_distances), rate, ceiling=None)
