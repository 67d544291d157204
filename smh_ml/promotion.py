"""When a newly trained model (the challenger) may replace the champion."""

from __future__ import annotations


def accuracy_floor(baseline_accuracy: float | None, baseline_margin: float, floor: float = 0.0) -> float:
    """The accuracy a model must exceed to count at all: the trivial baseline (answering the
    majority class for every capture) + margin, and never less than ``floor``."""
    return floor if baseline_accuracy is None else max(floor, baseline_accuracy + baseline_margin)


def passes_floor(accuracy: float, floor: float) -> bool:
    return accuracy > floor


def promotion_decision(challenger_accuracy: float, champion_accuracy: float | None,
                       margin: float = 0.0, same_test_set: bool = True,
                       baseline_accuracy: float | None = None, baseline_margin: float = 0.02) -> dict:
    """Promote when the challenger's held-out accuracy is at least the champion's + margin.

    A model no better than the trivial one (answering the majority class, the clean class,
    for every capture: ``baseline_accuracy``) plus ``baseline_margin`` is never promoted, not
    even as the first champion. Scores are only comparable on the same test captures; with no
    champion yet the first model passing the baseline is promoted. Returns the decision with
    the scores and the reason, for the record.
    """
    if baseline_accuracy is not None and not passes_floor(challenger_accuracy,
                                                          accuracy_floor(baseline_accuracy, baseline_margin)):
        promote, reason = False, (f"challenger {challenger_accuracy:.4f} is not above the trivial baseline "
                                  f"{baseline_accuracy:.4f} + {baseline_margin} (always answering the majority class)")
    elif champion_accuracy is None:
        promote, reason = True, "no champion yet"
    elif not same_test_set:
        promote, reason = False, "champion was tested on other captures; promote by hand after review"
    elif challenger_accuracy >= champion_accuracy + margin:
        promote, reason = True, f"challenger {challenger_accuracy:.4f} >= champion {champion_accuracy:.4f} + {margin}"
    else:
        promote, reason = False, f"challenger {challenger_accuracy:.4f} < champion {champion_accuracy:.4f} + {margin}"
    return {"promote": promote, "reason": reason, "challenger_accuracy": challenger_accuracy,
            "champion_accuracy": champion_accuracy, "margin": margin,
            "baseline_accuracy": baseline_accuracy, "baseline_margin": baseline_margin}


def best_candidate(accuracies: dict[str, float], parameters: dict[str, int] | None = None) -> str:
    """The candidate with the highest held-out accuracy; ties go to the smaller model."""
    if not accuracies:
        raise ValueError("no candidate to choose from")
    parameters = parameters or {}
    return max(accuracies, key=lambda name: (accuracies[name], -parameters.get(name, 0)))
