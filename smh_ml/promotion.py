"""When a newly trained model (the challenger) may replace the champion."""

from __future__ import annotations


def promotion_decision(challenger_accuracy: float, champion_accuracy: float | None,
                       margin: float = 0.0, same_test_set: bool = True) -> dict:
    """Promote when the challenger's held-out accuracy is at least the champion's + margin.

    Scores are only comparable on the same test captures; with no champion yet the first
    model is promoted. Returns the decision with both scores and the reason, for the record.
    """
    if champion_accuracy is None:
        promote, reason = True, "no champion yet"
    elif not same_test_set:
        promote, reason = False, "champion was tested on other captures; promote by hand after review"
    elif challenger_accuracy >= champion_accuracy + margin:
        promote, reason = True, f"challenger {challenger_accuracy:.4f} >= champion {champion_accuracy:.4f} + {margin}"
    else:
        promote, reason = False, f"challenger {challenger_accuracy:.4f} < champion {champion_accuracy:.4f} + {margin}"
    return {"promote": promote, "reason": reason, "challenger_accuracy": challenger_accuracy,
            "champion_accuracy": champion_accuracy, "margin": margin}
