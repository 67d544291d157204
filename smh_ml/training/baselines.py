"""Classifiers beside the shipped one: the domain feature extractor for FID/KID and the
O-TA whole-image baseline (Table 8), plus naming the held-out test set. The shipped
classifier's stages are in :mod:`smh_ml.workflows.classifier`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from smh_ml.config.schema import Profile
from smh_ml.data.datasets import load_patch_set, load_training_set
from smh_ml.evaluation.plots import confusion_matrix_png
from smh_ml.models import count_parameters
from smh_ml.training.checkpoint import save_classifier
from smh_ml.training.loop import (
    class_names,
    encode,
    train_final,
)


def train_domain_extractor(patch_dir: Path | str, out: Path | str, profile: Profile) -> dict:
    """A patch classifier trained on REAL patches (P-TA) whose penultimate layer gives the
    ``domain`` FID/KID features. Saved like :func:`run_classifier` output (no test). It is
    the paper's Inception-CNN (its 64-d penultimate layer) whatever the profile ships, trained
    with the profile's recipe for ``gan.domain_steps`` steps (or ``gan.domain_epochs`` passes),
    last checkpoint."""
    arch = profile.train.arch if profile.train.arch in ("inception_cnn", "baseline_cnn") else "inception_cnn"
    cfg = dataclasses.replace(profile.train, arch=arch, epochs=profile.gan.domain_epochs,
                              steps=profile.gan.domain_steps, val_fraction=0.0, flip_average=False)
    patch_set = load_patch_set(patch_dir)
    pta = load_training_set(patch_dir, "pta")
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    fitted = train_final(pta.arrays, pta.index, names, cfg, patch_set.geometry.patch)
    report = {"arch": cfg.arch, "classes": names, "geometry": patch_set.geometry.to_dict(),
              "purpose": "domain feature extractor for FID/KID", "train_set": "pta",
              "steps": fitted.steps, "history": fitted.history}
    save_classifier(out, fitted.model, report)
    return report


def run_whole_image_classifier(patch_dir: Path | str, out: Path | str, profile: Profile) -> dict:
    """O-TA (Table 8's first row): the baseline CNN on whole captures (cropped, resized to
    ``augment.ota_size``), one prediction per held-out capture, no patches, no Algorithm 1."""
    from smh_ml.models.baseline_cnn import baseline_cnn
    from smh_ml.training.loop import classification_metrics, fit, predict_proba, seed_everything

    cfg = profile.train
    patch_set = load_patch_set(patch_dir)
    ota = load_training_set(patch_dir, "ota")
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    height, width = ota.arrays.shape[1:]
    start = time.perf_counter()
    seed_everything(cfg.seed)
    fitted = fit(baseline_cnn(len(names), width, height=height), ota.arrays, encode(ota.index["label"], names),
                 cfg, desc="O-TA baseline")
    test = (patch_set.captures["split"] == "test").to_numpy()
    predicted = predict_proba(fitted.model, patch_set.images[test]).argmax(1)
    metrics = classification_metrics(encode(patch_set.captures.loc[test, "label"], names), predicted, names)
    report = {"profile": profile.name, "arch": "baseline_cnn", "classes": names, "train_set": "ota",
              "input_size": [int(height), int(width)], "train_size": int(len(ota.arrays)),
              "train": vars(cfg).copy(), "parameters": count_parameters(fitted.model),
              "final_history": fitted.history, "test": metrics, "seconds": time.perf_counter() - start}
    save_classifier(out, fitted.model, report)
    confusion_matrix_png(metrics["confusion_matrix"], names, Path(out) / "confusion_matrix.png",
                         "baseline CNN on O-TA, held-out whole captures")
    return report


def test_set_id(patch_set) -> str:
    """Identity of the held-out test captures (ids and content hashes): scores are only
    comparable between models tested on the same captures."""
    import hashlib

    test = patch_set.captures[patch_set.captures["split"] == "test"].sort_values("capture_id")
    text = "\n".join(f"{c}\t{h}" for c, h in zip(test["capture_id"], test["content_hash"]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
