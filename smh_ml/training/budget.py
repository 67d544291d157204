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
MAX_EVAL_SHARE = 0.2
"""When the budget is short, a fit's validation passes may take at most this share of its
training time. A pass over whole validation captures can cost as much as 27 optimiser steps
(EfficientNet-Lite0 at 256 px with test-time flips, 161 magnetic-tile captures); passes only
pick the checkpoint, and with a decaying learning rate the last pass was the best in the
budgeted runs measured, so steps buy more."""
MIN_PASSES = 2
"""Validation passes a budgeted fit keeps however short: the last, and one to fall back on."""


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


def _lean_every(c: StepCost, steps: int, eval_every: int) -> int:
    """The validation interval for a fit of ``steps`` steps that keeps its passes within
    :data:`MAX_EVAL_SHARE` of its training time (at least :data:`MIN_PASSES` passes)."""
    if not eval_every:
        return 0
    passes = math.ceil(steps / eval_every)
    affordable = max(MIN_PASSES, int(MAX_EVAL_SHARE * steps * c.seconds_per_step / max(c.eval_seconds, 1e-9)))
    return eval_every if passes <= affordable else math.ceil(steps / affordable)


def _fit_at(c: StepCost, steps: int) -> tuple[int, float]:
    """The validation interval and planned seconds of a budgeted fit of ``steps`` steps."""
    every = _lean_every(c, steps, max(1, round(c.eval_every * steps / c.steps)) if c.eval_every else 0)
    return every, c.final_seconds(steps, every)


def _floor_seconds(c: StepCost) -> float:
    """A budgeted fit at :data:`MIN_SHARE` of the configured steps: the least a kept one gets."""
    return _fit_at(c, max(1, math.ceil(MIN_SHARE * c.steps)))[1]


def _steps_within(c: StepCost, seconds: float) -> tuple[int, int, float]:
    """The most steps (up to the configured ones, down to :data:`MIN_STEPS`) whose fit fits
    in ``seconds``, with its validation interval and planned seconds."""
    floor = min(MIN_STEPS, c.steps)
    steps = max(floor, min(c.steps, int(seconds / max(c.seconds_per_step, 1e-9))))
    # passes round up, so the cost is not monotonic in the steps: step down until it fits
    while steps > floor and _fit_at(c, steps)[1] > seconds + 1e-9:
        steps -= 1
    return (steps, *_fit_at(c, steps))


def plan_budget(costs: list[StepCost], budget_seconds: float, folds: int = 0) -> BudgetPlan:
    """Steps for each candidate (in priority order) within ``budget_seconds``.

    The final fits, the models that compete on the validation captures, come first: every
    candidate gets its configured steps when they fit. Otherwise validation passes are thinned
    to :data:`MAX_EVAL_SHARE` of each fit's time first, then the candidates give up steps from
    the last-listed one forward, each down to :data:`MIN_SHARE` of its steps, so the recipe's
    first choice keeps the most; candidates that do not fit even then are left out from the
    last. What remains pays for ``folds``-fold CV of the candidate that is chosen, at up to its
    configured steps, or for none below :data:`MIN_CV_SHARE` of them.
    """
    if not costs:
        raise ValueError("no candidate to plan a budget for")
    if budget_seconds <= 0:
        raise ValueError(f"a training budget must be positive, got {budget_seconds} s")
    kept, dropped, reasons = list(costs), [], []
    configured = sum(c.final_seconds(c.steps, c.eval_every) for c in kept)
    if configured <= budget_seconds:
        finals = [(c, c.steps, c.eval_every, c.final_seconds(c.steps, c.eval_every)) for c in kept]
    else:
        while len(kept) > 1 and sum(_floor_seconds(c) for c in kept) > budget_seconds:
            last = kept.pop()
            dropped.append(last.arch)
            reasons.append(f"{last.arch} left out: at {MIN_SHARE:.0%} of their steps the candidates' final fits "
                           f"need {sum(_floor_seconds(c) for c in kept + [last]) / 60:.1f} min, more than the "
                           f"{budget_seconds / 60:.1f} min there are")
        allotted = [_fit_at(c, c.steps)[1] for c in kept]
        excess = sum(allotted) - budget_seconds
        for i in reversed(range(len(kept))):  # the last-listed candidates give up their steps first
            cut = min(max(excess, 0.0), max(allotted[i] - _floor_seconds(kept[i]), 0.0))
            allotted[i] -= cut
            excess -= cut
        if excess > 0:  # one candidate whose half steps do not fit: it gets what there is
            allotted[0] = budget_seconds
        finals = [(c, *_steps_within(c, seconds)) for c, seconds in zip(kept, allotted, strict=True)]
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
        passes = math.ceil(steps / eval_every) if eval_every else 0
        reasons.append(f"{c.arch}: {steps} of {c.steps} steps ({c.seconds_per_step:.3f} s a step, {pps:.0f} "
                       f"patches/s) and {passes} validation passes ({c.eval_seconds:.0f} s each), about "
                       f"{seconds / 60:.1f} min; {cv_text}")
    return BudgetPlan(round(budget_seconds, 1), folds, tuple(plans), tuple(dropped), tuple(reasons))
