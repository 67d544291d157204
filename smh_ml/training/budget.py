"""A training budget in minutes, turned into optimiser steps per candidate.

A step count tuned on one CPU overruns on a slower one and wastes a faster one. Each
candidate is timed for a few optimiser steps and one validation pass on the real training
patches; the plan (:func:`plan_budget`) spends the minutes on the final fits that compete on
the validation captures first, and on cross-validation of the chosen one with what is left:
CV reports how the recipe generalises, it chooses nothing, so the losers are not
cross-validated.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from smh_ml.config.schema import TrainConfig

MIN_SHARE = 0.5
"""A candidate trained for less than this share of its configured steps is left out: an
under-trained network loses the validation comparison and costs the others their steps."""
MIN_CV_SHARE = 0.25
"""Cross-validation runs only when its folds get at least this share of the configured steps
(fewer would estimate another, shorter recipe than the one that ships)."""
MIN_STEPS = 20
"""Fewest steps a candidate that is kept gets, whatever the budget (or its configured steps,
when fewer)."""


def candidate_config(train: TrainConfig, arch: str) -> TrainConfig:
    """``train`` for candidate ``arch``. ``train.steps`` is sized for the quickest learner: one
    fine-tuned from ImageNet weights when the candidates hold one; a network learnt from scratch
    beside it gets its card's ``steps_scale`` times the steps and the validation interval
    (unless ``train.scale_steps`` is off). Among networks that all learn from scratch every one
    trains ``steps``."""
    from smh_ml.models import get_card  # lazily: the planner's arithmetic needs no torch

    cfg = dataclasses.replace(train, arch=arch)
    pretrained = train.pretrained and any(get_card(a).weights for a in train.architectures())
    card = get_card(arch)
    if not (train.scale_steps and pretrained and not card.weights) or card.steps_scale == 1.0 or not train.steps:
        return cfg
    return dataclasses.replace(cfg, steps=round(train.steps * card.steps_scale),
                               eval_every=round(train.eval_every * card.steps_scale))


@dataclass(frozen=True)
class StepCost:
    """A candidate's measured costs on this machine."""

    arch: str
    """The candidate's name: its architecture, or a key that also names its geometry."""
    steps: int
    """The configured steps (the upper bound)."""
    eval_every: int
    seconds_per_step: float
    eval_seconds: float
    """One validation pass (BatchNorm statistics and the validation captures)."""
    batch_size: int

    def final_seconds(self, steps: int, eval_every: int) -> float:
        """The final fit: ``steps`` steps and a validation pass every ``eval_every``."""
        return steps * self.seconds_per_step + math.ceil(steps / max(eval_every, 1)) * self.eval_seconds


@dataclass(frozen=True)
class CandidatePlan:
    arch: str
    steps: int
    eval_every: int
    cv_steps: int
    """Steps of each CV fold when this candidate is the one chosen (0: no CV)."""
    planned_seconds: float
    """The final fit's."""
    seconds_per_step: float
    patches_per_second: float
    share: float
    """Planned steps over configured steps."""


@dataclass(frozen=True)
class BudgetPlan:
    budget_seconds: float
    folds: int
    """CV folds asked for (0 or 1: none)."""
    candidates: tuple[CandidatePlan, ...]
    dropped: tuple[str, ...]
    reasons: tuple[str, ...]

    def steps(self) -> dict[str, tuple[int, int]]:
        return {c.arch: (c.steps, c.eval_every) for c in self.candidates}

    def cv_steps(self, arch: str) -> int:
        return next(c.cv_steps for c in self.candidates if c.arch == arch)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_budget(costs: list[StepCost], budget_seconds: float, folds: int = 0) -> BudgetPlan:
    """Steps for each candidate (in priority order) within ``budget_seconds``.

    The final fits, the models that compete on the validation captures, come first: every
    candidate gets its configured steps when they fit, all are scaled down together when
    that keeps them at :data:`MIN_SHARE` or more, and otherwise the last-listed candidates
    are left out. What remains pays for ``folds``-fold CV of the candidate that is chosen,
    at up to its configured steps, or for none below :data:`MIN_CV_SHARE` of them.
    """
    if not costs:
        raise ValueError("no candidate to plan a budget for")
    if budget_seconds <= 0:
        raise ValueError(f"a training budget must be positive, got {budget_seconds} s")
    kept, dropped, reasons = list(costs), [], []
    while True:
        full = sum(c.final_seconds(c.steps, c.eval_every) for c in kept)
        share = min(1.0, budget_seconds / full)
        if share >= MIN_SHARE or len(kept) == 1:
            break
        last = kept.pop()
        dropped.append(last.arch)
        reasons.append(f"{last.arch} left out: the candidates' final fits need {full / 60:.1f} min at full steps, "
                       f"{share:.0%} of which fits in {budget_seconds / 60:.1f} min")
    finals = []
    for c in kept:
        allotted = share * c.final_seconds(c.steps, c.eval_every)
        floor = min(MIN_STEPS, c.steps)
        steps = max(floor, int(c.steps * share))
        while True:  # validation passes round up: step down until the fit is inside its share
            eval_every = max(1, round(c.eval_every * steps / c.steps)) if c.eval_every else 0
            if steps <= floor or c.final_seconds(steps, eval_every) <= allotted + 1e-9:
                break
            steps -= 1
        finals.append((c, steps, eval_every, c.final_seconds(steps, eval_every)))
    left = budget_seconds - sum(f[3] for f in finals)
    plans = []
    for c, steps, eval_every, seconds in finals:
        cv_steps = 0
        if folds > 1:
            cv_steps = min(c.steps, int(max(left, 0.0) / (folds * c.seconds_per_step)))
            cv_steps = cv_steps if cv_steps >= MIN_CV_SHARE * c.steps else 0
        pps = c.batch_size / max(c.seconds_per_step, 1e-9)
        plans.append(CandidatePlan(c.arch, steps, eval_every, cv_steps, round(seconds, 1), round(c.seconds_per_step, 4),
                                   round(pps, 1), round(steps / c.steps, 3)))
        cv_text = (f"{folds}-fold CV at {cv_steps} steps if chosen" if cv_steps else
                   "no CV (the budget left would give its folds under "
                   f"{MIN_CV_SHARE:.0%} of the steps)" if folds > 1 else "no CV")
        reasons.append(f"{c.arch}: {steps} of {c.steps} steps ({c.seconds_per_step:.3f} s a step, {pps:.0f} "
                       f"patches/s), about {seconds / 60:.1f} min; {cv_text}")
    return BudgetPlan(round(budget_seconds, 1), folds, tuple(plans), tuple(dropped), tuple(reasons))
