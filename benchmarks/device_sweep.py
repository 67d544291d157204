"""Classifier recipes side by side on a lent GPU, on the simulated default data or an imported set.

Simulates ``--count`` captures once (or imports ``--import KIND:SRC``, e.g.
``magnetic-tile:.devsite/gpu/mt``), cuts one patch set per distinct patching setting, and runs
the library's fit/test/export stages (what `smh-ml train --no-cv --no-robustness` runs) for
each variant. Each variant's best validation accuracy (the selection metric, on a split of the
TRAINING captures) and its held-out test report are appended to ``OUT/results.jsonl`` as soon
as it ends, so a run cut off by its time limit still returns what it finished.

Great Expectations is left out because the GPU image does not ship it; everything else is
the code `smh-ml patches` and `smh-ml train` run.

    python benchmarks/device_sweep.py OUT --count 609 \
        --variant 'eff300=demo;patching.tiles=64;train.steps=300' \
        --variant 'paper=paper;train.cv_folds=0'

Each row also carries the held-out captures' class probabilities (``test_probs``, the mean over
a capture's patches), so seed ensembles can be scored afterwards without the models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from smh_ml.config.overrides import apply_settings
from smh_ml.config.presets import get_profile
from smh_ml.config.schema import Profile
from smh_ml.data.captures import load_manifest
from smh_ml.data.datasets import build_ota, build_patch_set, build_pta, data_settings, load_patch_set, save_datasets
from smh_ml.data.importers import import_dataset
from smh_ml.data.simulate import simulate_captures
from smh_ml.hardware import describe
from smh_ml.training.checkpoint import load_classifier
from smh_ml.training.loop import predict_groups, test_patches
from smh_ml.workflows.classifier import run_classifier


def parse_variant(text: str) -> tuple[str, Profile]:
    """``name=profile;section.key=value;...`` -> (name, profile with the settings)."""
    name, _, spec = text.partition("=")
    profile_name, *settings = spec.split(";")
    return name, apply_settings(get_profile(profile_name), settings)


def patch_folder(captures: Path, out: Path, profile: Profile) -> Path:
    """One patch set per distinct data setting, built once."""
    key = hashlib.md5(json.dumps(data_settings(profile), sort_keys=True, default=str).encode()).hexdigest()[:8]
    folder = out / f"patches-{key}"
    if not (folder / "geometry.json").exists():
        patch_set = build_patch_set(load_manifest(captures), profile)
        save_datasets(folder, patch_set, build_pta(patch_set, profile.clean_class, profile.augment),
                      build_ota(patch_set, profile.augment), profile)
    return folder


def test_probabilities(patches: Path, run: Path) -> dict[str, list[float]]:
    """capture id -> class probabilities (mean over its patches) of the run's saved model."""
    model, _ = load_classifier(run)
    captures, groups = test_patches(load_patch_set(patches))
    probs = predict_groups(model.to("cuda" if torch.cuda.is_available() else "cpu"), groups)
    return {cid: [round(float(v), 5) for v in p.mean(axis=0)] for cid, p in zip(captures["capture_id"], probs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=609)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--import", dest="source", default=None, help="KIND:SRC instead of simulating")
    parser.add_argument("--variant", action="append", default=[])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    start = time.perf_counter()
    captures = args.out / "captures"
    if not captures.exists() and args.source:
        kind, _, src = args.source.partition(":")
        import_dataset(kind, src, captures)
    elif not captures.exists():
        simulate_captures(captures, count=args.count, scale=args.scale)
    head = {"hardware": describe(), "count": args.count, "source": args.source,
            "simulate_s": round(time.perf_counter() - start, 1),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with results.open("a") as f:
        f.write(json.dumps(head) + "\n")
    for text in args.variant:
        name, profile = parse_variant(text)
        start = time.perf_counter()
        patches = patch_folder(captures, args.out, profile)
        patch_s = time.perf_counter() - start
        report = run_classifier(patches, args.out / f"run-{name}", profile, cv=False, robustness=False,
                                precision_gate=False)
        test = report.test
        vals = [h.get("val_accuracy") for h in report.final_history if h.get("val_accuracy") is not None]
        row = {"name": name, "profile": profile.name, "arch": profile.train.arch,
               "best_val_accuracy": max(vals) if vals else None, "test_accuracy": test["accuracy"],
               "rule": test["rule"], "n": test["n"], "argmax": test.get("argmax", {}).get("accuracy"),
               "auroc": test["image"].get("auroc"), "defect_recall": test["image"].get("defect_recall"),
               "false_alarms": test["image"].get("false_alarm_rate"),
               "confusion": test["confusion_matrix"], "fit": report.fit,
               "patch_s": round(patch_s, 1), "seconds": round(time.perf_counter() - start, 1),
               "test_probs": test_probabilities(patches, args.out / f"run-{name}")}
        print(json.dumps(row, default=str), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(row, default=str) + "\n")


if __name__ == "__main__":
    main()
