"""The validation trial: synthetic patches enter P-GAN when the classifier trained with them
decides the validation captures at least as well as without them.

Why: no FID ceiling told a helpful synthetic set from a harmful one. On the simulated default
the SDG-GAN sets the ceiling refused lifted the held-out accuracy from 91.3% to 95.9%. On
magnetic tile the same kind of set cost 2.2 points, and a crack set the gate admitted cost 1.5
points (its "cracks" were blobs; the validation captures showed it, 96.27% against 98.14%).
The validation captures (a split of the TRAINING captures; the test captures are never looked
at) predicted these outcomes (docs/RESULTS.md). So every class with synthetic patches that
pass the content checks (not flat, not blank, not one image repeated) goes on trial, whether
the FID ceiling admitted them or not. The classifier is trained twice, with one recipe and one
seed: on P-GAN without any of those patches (their classes topped up by traditional
augmentation) and with all of them. A set the FID ceiling refused must earn its place: the
second model decides ``gan.trial_min_gain`` more validation captures right. A set the gate
admitted keeps its place unless it costs that many: when both kinds are on trial and the
patches together gain too little but lose less than that, the admitted sets stay alone.
Patches that fail a content check never go on trial. Both fits are kept with their inputs, so
the classifier stage reuses the one whose training set won instead of fitting it again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from smh_ml.config.schema import GanConfig, Profile, TrainConfig
from smh_ml.data.datasets import PatchSet, TrainingSet
from smh_ml.io import atomic_write_text
from smh_ml.training.budget import candidate_config

TRIAL_FIELDS = ("trial", "trial_min_gain")
"""The GanConfig settings of the trial: they judge P-GAN, not a GAN or its gate."""
TRIAL_FITS = "trial"
"""Where the training set keeps the trial's two fits (``with/``, ``without/``)."""


def trial_fits(train_dir: Path | str) -> tuple[Path, Path]:
    """The folders of the trial's two fits kept beside a training set (:func:`trial_pgan`'s
    ``keep``), for :func:`smh_ml.workflows.classifier.fit_stage`'s ``reuse``."""
    return tuple(Path(train_dir) / TRIAL_FITS / name for name in ("with", "without"))
TRIAL_SET = "synthetic-ungated"
"""Where a class's patches on trial are written: its GAN's patches sampled with the gate off."""


@dataclass
class TrialResult:
    classes: list[str]
    """The classes on trial: every class with synthetic patches that passed the content checks."""
    admitted: bool
    reason: str
    arch: str = ""
    validation_captures: int = 0
    without: dict = field(default_factory=dict)
    """Validation accuracy and captures decided right, trained without the patches on trial."""
    with_synthetic: dict = field(default_factory=dict)
    min_gain: int = 0
    fid_refused: list[str] = field(default_factory=list)
    """The classes on trial whose patches the FID ceiling refused: with any, the patches need
    ``min_gain`` more captures right; without, they stay unless they cost ``min_gain``."""
    required_gain: int = 0
    kept: list[str] = field(default_factory=list)
    """The classes whose synthetic patches enter P-GAN: all on trial when admitted; else those
    the gate admitted when the trial showed they cost less than ``min_gain`` captures; else none."""
    seconds: float = 0.0
    """Wall seconds of the two fits."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path | str) -> Path:
        """``trial.json``, written atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")


def validation_accuracy(report: dict) -> float | None:
    """Validation image accuracy of a classifier report's kept checkpoint (None without one)."""
    best = report.get("fit", {}).get("best_step")
    return next((h["val_accuracy"] for h in report.get("final_history", [])
                 if h.get("step") == best and "val_accuracy" in h), None)


def _verdict(gan_dir: Path, label: str) -> str | None:
    """``admitted`` (the gate let patches in), ``fid`` (refused for its FID alone), or None
    (refused for its content, no patches wanted, or no synthetic set)."""
    path = gan_dir / label / "synthetic" / "gate.json"
    gate = json.loads(path.read_text()) if path.is_file() else {}
    if not gate or gate.get("skipped"):
        return None
    if not gate.get("refused"):
        return "admitted" if gate.get("written", 0) else None
    content = gate.get("content_passed")
    if content is None:  # a gate.json written before the field: refused for the FID alone?
        content = bool(gate.get("reasons")) and all(r.startswith("FID ") for r in gate["reasons"])
    return "fid" if content else None


def on_trial(gan_dir: Path | str, classes: list[str], cfg: GanConfig) -> list[str]:
    """The classes under ``gan_dir`` whose synthetic patches go on trial: admitted by the gate,
    or refused for their FID alone (none when ``cfg`` has the gate or the trial off)."""
    if not (cfg.gate and cfg.trial):
        return []
    return [label for label in classes if _verdict(Path(gan_dir), label)]


def fid_refused(gan_dir: Path | str, classes: list[str]) -> list[str]:
    """Of ``classes``, those whose synthetic set the FID ceiling alone refused."""
    return [label for label in classes if _verdict(Path(gan_dir), label) == "fid"]


def required_gain(min_gain: int, refused: bool) -> int:
    """Captures the synthetic patches must gain: ``min_gain`` when any of them was refused by
    the FID ceiling; else (all admitted by the gate) they stay unless they lose ``min_gain``."""
    return min_gain if refused else min(0, 1 - min_gain)


def judge(classes: list[str], without: dict, with_synthetic: dict, min_gain: int,
          refused: list[str] | None = None) -> TrialResult:
    """The verdict from two classifier reports (``report.json`` as dicts) trained with one recipe
    and seed, without and with the synthetic patches on trial. ``refused``: the classes on trial
    the FID ceiling refused (default: all of them, the strict rule)."""
    refused = list(classes if refused is None else refused)
    need = required_gain(min_gain, bool(refused))
    scores = []
    for report in (without, with_synthetic):
        accuracy = validation_accuracy(report)
        captures = int(report.get("decision", {}).get("validation_captures") or 0)
        if accuracy is None or not captures:
            raise ValueError(f"{report.get('arch')}: no validation captures in its report, so no trial is possible")
        scores.append({"accuracy": accuracy, "correct": round(accuracy * captures), "captures": captures})
    before, after = scores
    gain = after["correct"] - before["correct"]
    admitted = gain >= need
    verdict = f"a gain of {gain} >= {need}, admitted" if admitted else f"a gain of {gain} < {need}, refused"
    gate_admitted = [c for c in classes if c not in refused]
    kept = list(classes) if admitted else []
    if not admitted and gate_admitted and gain >= required_gain(min_gain, False):
        kept = gate_admitted
        verdict += f"; the sets the gate admitted ({', '.join(kept)}) cost less than {min_gain} and stay"
    reason = (f"{after['correct']} vs {before['correct']} of {before['captures']} validation captures decided "
              f"right with and without the synthetic patches of {', '.join(classes)}: {verdict}")
    seconds = sum(r.get("seconds", {}).get("fit", 0.0) for r in (without, with_synthetic))
    return TrialResult(classes, admitted, reason, str(without.get("arch", "")), before["captures"], before, after,
                       min_gain, refused, need, kept, seconds)


def sample_ungated(patch_set: PatchSet, gan_dir: Path | str, label: str, profile: Profile) -> Path:
    """``<label>/<TRIAL_SET>``: ``label``'s GAN patches written whatever the gate said (the set on
    trial, and reproduce's P-GAN without the gate). Sampled afresh on each call from the saved
    generator with the gate's seed, so they are the patches the gate judged and never outlive a
    changed setting."""
    from smh_ml.synthetic.defects import gan_data
    from smh_ml.synthetic.gan.experiment import synthesize_class

    synthesize_class(label, gan_dir, gan_data(patch_set, label, profile), dataclasses.replace(profile.gan, gate=False),
                     into=TRIAL_SET)
    return Path(gan_dir) / label / TRIAL_SET


def trial_pgan(patch_set: PatchSet, gan_dir: Path | str, classes: list[str], profile: Profile,
               cfg: TrainConfig | None = None, keep: Path | str | None = None
               ) -> tuple[TrainingSet, TrialResult | None]:
    """P-GAN from the synthetic sets under ``gan_dir``: with the patches on trial when the trial
    admits them, with the gate's admitted sets alone when only they stay (``kept``), else with
    none of them. ``cfg``: the classifier that judges, one fit without
    and one with (default: the profile's ``train.arch`` with its configured steps). ``keep``: a
    folder where both fits are saved (``without/``, ``with/``) with their inputs, for
    :func:`smh_ml.workflows.classifier.fit_stage` to reuse."""
    from smh_ml.synthetic.pgan import build_pgan, read_synthetic
    from smh_ml.training.loop import class_names
    from smh_ml.workflows.classifier import fit_stage, save_reusable_fit

    gan_dir = Path(gan_dir)
    gated = {c: read_synthetic(gan_dir / c / "synthetic") for c in classes}
    trial = on_trial(gan_dir, classes, profile.gan)
    if not trial:
        return build_pgan(patch_set, gated, profile.clean_class, profile.augment, profile.gan.pgan_target), None
    refused = fid_refused(gan_dir, trial)
    candidate = gated | {label: read_synthetic(sample_ungated(patch_set, gan_dir, label, profile))
                         for label in refused}
    sets = {"without": build_pgan(patch_set, {c: s for c, s in gated.items() if c not in trial},
                                  profile.clean_class, profile.augment, profile.gan.pgan_target),
            "with": build_pgan(patch_set, candidate, profile.clean_class, profile.augment, profile.gan.pgan_target)}
    cfg = cfg or candidate_config(profile.train, profile.train.arch)
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    reports = {}
    for name, training in sets.items():
        model, report = fit_stage(patch_set, training, names, profile, cfg, cv=False)
        reports[name] = report.to_dict()
        if keep is not None:
            save_reusable_fit(Path(keep) / name, model, report, patch_set, training, profile, cfg)
    result = judge(trial, reports["without"], reports["with"], profile.gan.trial_min_gain, refused)
    if result.admitted or not result.kept:
        return sets["with" if result.admitted else "without"], result
    # the gate's admitted sets alone: a set neither fit had, trained afresh by the classifier stage
    return build_pgan(patch_set, {c: gated[c] for c in result.kept}, profile.clean_class, profile.augment,
                      profile.gan.pgan_target), result
