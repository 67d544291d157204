"""Held-out image accuracy of a shipped model, measured the way the line uses it: through
``smh-ml predict`` on the capture FILES of the held-out test split (issue 12's number).

Not a test: it prints figures. The test captures are the ``split == test`` rows of a patch
folder's ``captures.csv`` (whole original captures, never trained on, never used to select
or calibrate the model). ``smh-ml predict --json`` decides them in one call with the model's
own decision rule (its calibrated threshold; ``--argmax`` for the paper's rule), and this
script scores the decisions against the folder labels, beside the majority-class baseline.

    python benchmarks/heldout_accuracy.py PATCH_DIR MODEL [--argmax] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def predict(paths: list[str], model: str, argmax: bool, backend: str) -> tuple[list[dict], float, str]:
    """Run the CLI once on every path; its JSON decisions, the wall time and what it said it ran
    on (precision and backend)."""
    cli = Path(sys.executable).with_name("smh-ml")
    command = [str(cli), "predict", *paths, "--model", model, "--json", "--backend", backend,
               *(["--argmax"] if argmax else [])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise SystemExit(f"smh-ml predict failed ({done.returncode}): {done.stderr[-2000:]}")
    ran = re.search(r"images/s, (\S+ on \S+),", done.stderr)
    return json.loads(done.stdout), seconds, ran.group(1) if ran else "?"


def score(captures: pd.DataFrame, rows: list[dict], clean: str) -> dict:
    decided = {r["path"]: r.get("label") for r in rows}
    truth = captures["label"].tolist()
    got = [decided.get(str(p)) for p in captures["path"]]
    correct = [g == t for g, t in zip(got, truth)]
    defect = [t != clean for t in truth]
    flagged = [g is not None and g != clean for g in got]
    n_defect, n_clean = sum(defect), len(truth) - sum(defect)
    per_class = {}
    for label in sorted(set(truth)):
        idx = [i for i, t in enumerate(truth) if t == label]
        per_class[label] = {"n": len(idx), "recall": sum(correct[i] for i in idx) / len(idx)}
    misses = [{"path": str(p), "label": t, "predicted": g} for p, t, g, c in
              zip(captures["path"], truth, got, correct) if not c]
    return {
        "captures": len(truth), "accuracy": sum(correct) / len(truth),
        "majority_baseline": captures["label"].value_counts().iloc[0] / len(truth),
        "defect_recall": sum(f for f, d in zip(flagged, defect) if d) / max(n_defect, 1),
        "false_alarm_rate": sum(f for f, d in zip(flagged, defect) if not d) / max(n_clean, 1),
        "errors": sum(g is None for g in got), "per_class": per_class, "misses": misses,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patch_dir", type=Path, help="output folder of 'smh-ml patches' (its captures.csv)")
    parser.add_argument("model", help="an 'smh-ml train' folder, an .onnx file or a models:/ URI")
    parser.add_argument("--argmax", action="store_true", help="the paper's plain Algorithm 1")
    parser.add_argument("--clean-class", default="defect-free")
    parser.add_argument("--backend", default="auto", help="smh-ml predict's --backend (default: its own, auto)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    captures = pd.read_csv(args.patch_dir / "captures.csv")
    captures = captures[captures["split"] == "test"].reset_index(drop=True)
    rows, seconds, ran = predict([str(p) for p in captures["path"]], args.model, args.argmax, args.backend)
    figures = score(captures, rows, args.clean_class)
    figures |= {"model": args.model, "rule": "argmax" if args.argmax else "model threshold",
                "predict_seconds": round(seconds, 1), "ran": ran}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from smh_ml.hardware import describe

    figures["hardware"] = describe()
    print(f"{figures['captures']} held-out captures through smh-ml predict ({figures['rule']}): "
          f"accuracy {figures['accuracy']:.4f} (majority baseline {figures['majority_baseline']:.4f}), "
          f"defect recall {figures['defect_recall']:.4f}, false alarms {figures['false_alarm_rate']:.4f}, "
          f"{figures['errors']} unreadable; {seconds:.1f} s, {ran}, on {figures['hardware']['cpu']}")
    for label, m in figures["per_class"].items():
        print(f"  {label:12s} n={m['n']:4d} recall {m['recall']:.3f}")
    for miss in figures["misses"]:
        print(f"  miss: {miss['path']}: {miss['label']} -> {miss['predicted']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
