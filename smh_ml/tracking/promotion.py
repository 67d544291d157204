"""When a newly trained model (the challenger) may replace the champion."""

from __future__ import annotations

import math


def accuracy_floor(baseline_accuracy: float | None, baseline_margin: float, floor: float = 0.0,
                   test_size: int | None = None) -> float:
    """The accuracy a model must exceed to count at all: the trivial baseline (answering the
    majority class for every capture) + the larger of ``baseline_margin`` and the noise of a
    test set of ``test_size`` captures (:func:`noise_margin` at the baseline: on 9 captures one
    more right answer is noise, not skill), and never less than ``floor``. A negative margin
    lowers the floor below the baseline, noise or not (tests of the wiring turn the rule off so)."""
    if baseline_accuracy is None:
        return floor
    if baseline_margin < 0:
        return max(floor, baseline_accuracy + baseline_margin)
    return max(floor, baseline_accuracy + max(baseline_margin, noise_margin(baseline_accuracy, test_size)))


def passes_floor(accuracy: float, floor: float) -> bool:
    return accuracy > floor


def noise_margin(accuracy: float, test_size: int | None) -> float:
    """One binomial standard error of an accuracy measured on ``test_size`` captures: two
    models closer than this on the same test set are not told apart by it (0 when unknown)."""
    if not test_size:
        return 0.0
    p = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(max(p * (1.0 - p), 1.0 / test_size) / test_size)


def promotion_decision(challenger_accuracy: float, champion_accuracy: float | None,
                       margin: float = 0.0, same_test_set: bool = True,
                       baseline_accuracy: float | None = None, baseline_margin: float = 0.02,
                       test_size: int | None = None) -> dict:
    """Promote when the challenger's held-out image accuracy (the primary metric) is strictly
    above the champion's + the larger of ``margin`` and the noise margin of the test set
    (:func:`noise_margin` at the champion's accuracy over ``test_size`` captures).

    A model no better than the trivial one (answering the majority class, the clean class,
    for every capture: ``baseline_accuracy``) plus ``baseline_margin`` is never promoted, not
    even as the first champion. Scores are only comparable on the same test captures; with no
    champion yet the first model passing the baseline is promoted. Returns the decision with
    both scores, the margins and the reason, for the record.
    """
    required = max(margin, noise_margin(champion_accuracy, test_size)) if champion_accuracy is not None else margin
    floor = accuracy_floor(baseline_accuracy, baseline_margin, test_size=test_size)
    if baseline_accuracy is not None and not passes_floor(challenger_accuracy, floor):
        promote, reason = False, (f"challenger {challenger_accuracy:.4f} is not above the trivial baseline "
                                  f"{baseline_accuracy:.4f} + {floor - baseline_accuracy:.4f} (always answering the "
                                  f"majority class; the larger of {baseline_margin} and the noise of "
                                  f"{test_size or 'an unknown number of'} test captures)")
    elif champion_accuracy is None:
        promote, reason = True, "no champion yet"
    elif not same_test_set:
        promote, reason = False, "champion was tested on other captures; promote by hand after review"
    elif challenger_accuracy > champion_accuracy + required:
        promote, reason = True, (f"challenger {challenger_accuracy:.4f} > champion {champion_accuracy:.4f} "
                                 f"+ {required:.4f}")
    else:
        promote, reason = False, (f"challenger {challenger_accuracy:.4f} is not above champion "
                                  f"{champion_accuracy:.4f} + {required:.4f} (margin {margin}, noise margin of "
                                  f"{test_size or 'an unknown number of'} test captures)")
    return {"promote": promote, "reason": reason, "metric": "held-out image accuracy",
            "challenger_accuracy": challenger_accuracy, "champion_accuracy": champion_accuracy,
            "margin": margin, "required_gain": required, "test_size": test_size,
            "baseline_accuracy": baseline_accuracy, "baseline_margin": baseline_margin}


def best_candidate(accuracies: dict[str, float], parameters: dict[str, int] | None = None) -> str:
    """The candidate with the highest held-out accuracy; ties go to the smaller model."""
    if not accuracies:
        raise ValueError("no candidate to choose from")
    parameters = parameters or {}
    return max(accuracies, key=lambda name: (accuracies[name], -parameters.get(name, 0)))
