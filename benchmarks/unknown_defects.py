"""Unknown defects by leave-one-class-out: for each defect class X of a patch folder, train
without X, calibrate the unknown threshold on the validation captures, and score the
held-out captures (X's must be flagged, the known ones not). Prints one row per class.

Not a test: it prints figures (smh_ml.workflows.unknown).

    python benchmarks/unknown_defects.py PATCH_DIR [--arch baseline_cnn] [--steps 600] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def main() -> None:
    from smh_ml.data.datasets import load_patch_set
    from smh_ml.data.recipe import recorded_profile
    from smh_ml.hardware import describe
    from smh_ml.training.budget import candidate_config
    from smh_ml.workflows.unknown import leave_one_out

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patch_dir", type=Path)
    parser.add_argument("--arch", default=None, help="default: the folder's first candidate")
    parser.add_argument("--steps", type=int, default=None, help="default: the profile's steps for the arch")
    parser.add_argument("--classes", default=None, help="comma-separated defect classes to leave out (default all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    profile = recorded_profile(args.patch_dir)
    patch_set = load_patch_set(args.patch_dir)
    arch = args.arch or profile.train.architectures()[0]
    cfg = candidate_config(profile.train, arch)
    if args.steps:
        cfg = dataclasses.replace(cfg, steps=args.steps, eval_every=max(1, args.steps // 3))
    labels = sorted(set(patch_set.captures["label"]) - {profile.clean_class})
    if args.classes:
        labels = [c for c in args.classes.split(",") if c in labels]
    print(f"{args.patch_dir}: {arch}, {cfg.steps} steps; {describe()}")
    print("| left out | unknown test captures | AUROC | unknown flagged | known flagged | known accuracy "
          "| known accuracy, flagged counted wrong | threshold | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for label in labels:
        r = leave_one_out(patch_set, profile, label, cfg)
        rows.append(r)
        print(f"| {label} | {r['unknown_captures']} | {r['auroc']:.3f} | {r['unknown_flagged']:.1%} | "
              f"{r['known_flagged']:.1%} | {r['known_accuracy']:.2%} | {r['known_accuracy_unflagged']:.2%} | "
              f"{r['threshold']:.3f} | {r['seconds']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
