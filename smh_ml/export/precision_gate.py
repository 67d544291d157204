"""Faster arithmetic only where it keeps the decisions: the precision gate.

int8 (onnxruntime QDQ) and bf16 (OpenVINO's CPU plugin on a processor with native bf16) run the
exported classifier faster than fp32. Each is accepted only when its Algorithm 1 accuracy on the
VALIDATION captures, whole training captures held out of fitting (the ones the checkpoint and the
threshold were chosen on), is within ``tolerance`` of fp32's on the same captures. The held-out
test captures are never used: a path chosen on them would make the test figure a choice.

The verdicts travel in the model card (``fast_paths``), so ``Engine(backend="auto")`` runs a
path only where it was measured to keep the decisions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smh_ml.deploy.runtime import read_card

BF16 = "openvino-bf16"
"""The name of the bf16 path, as ``Engine(backend=...)`` and the card's ``fast_paths`` call it."""


@dataclass(frozen=True)
class GateCaptures:
    """The captures a gate decides: each capture's patches in row-major order, and its label."""

    captures: pd.DataFrame
    groups: list[np.ndarray]
    split: str
    """``validation`` (training captures held out of fitting); never ``test``."""


@dataclass
class Verdict:
    path: str
    accepted: bool
    fp32_accuracy: float | None
    accuracy: float | None
    tolerance: float
    captures: int
    split: str
    reason: str

    @property
    def drop(self) -> float | None:
        if self.fp32_accuracy is None or self.accuracy is None:
            return None
        return self.fp32_accuracy - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop}


def validation_gate_captures(patch_set, clean_class: str, val_fraction: float, seed: int) -> GateCaptures:
    """The validation captures of a model trained with ``val_fraction`` and ``seed`` on
    ``patch_set`` (the same split training drew); a clear error when it has none."""
    from smh_ml.config.schema import TrainConfig
    from smh_ml.training.loop import class_names, validation_captures

    names = class_names(set(patch_set.captures["label"]), clean_class)
    val = validation_captures(patch_set, names, TrainConfig(val_fraction=val_fraction, seed=seed))
    if val is None or not val.groups:
        raise ValueError(f"val_fraction {val_fraction}: no validation captures to gate a faster precision on")
    return GateCaptures(val.captures, val.groups, "validation")


def accuracy(runtime, onnx_path: Path | str, gate: GateCaptures, classes: list[str]) -> float:
    """Algorithm 1 accuracy of ``runtime`` (an onnxruntime session or anything answering like
    one) with the decision rule of the model in ``onnx_path`` (its calibrated threshold)."""
    from smh_ml.deploy.runtime import onnx_predict
    from smh_ml.training.loop import evaluate_images

    threshold = read_card(onnx_path).threshold
    metrics = evaluate_images(lambda arrays: onnx_predict(runtime, arrays), gate.captures, gate.groups,
                              classes, threshold=threshold)
    return float(metrics["accuracy"])


def judge(path: str, fp32_accuracy: float, candidate_accuracy: float, tolerance: float,
          gate: GateCaptures) -> Verdict:
    """Accepted when the candidate loses at most ``tolerance`` (a fraction) against fp32."""
    if not tolerance >= 0:
        raise ValueError(f"{path} tolerance must be >= 0, got {tolerance}")
    drop = fp32_accuracy - candidate_accuracy
    accepted = drop <= tolerance + 1e-12
    reason = (f"{candidate_accuracy:.4f} vs fp32 {fp32_accuracy:.4f} on {len(gate.groups)} {gate.split} captures: "
              f"{'within' if accepted else 'outside'} the tolerance of {tolerance:g}")
    return Verdict(path, accepted, fp32_accuracy, candidate_accuracy, tolerance, len(gate.groups), gate.split, reason)


def not_measured(path: str, reason: str, tolerance: float, gate: GateCaptures) -> Verdict:
    """A path this machine cannot measure: refused, with the reason."""
    return Verdict(path, False, None, None, tolerance, len(gate.groups), gate.split, reason)


def gated_bf16(fp32_path: Path | str, gate: GateCaptures, classes: list[str], tolerance: float,
               fp32_accuracy: float | None = None, threads: int | None = None) -> Verdict:
    """OpenVINO bf16 against fp32 on the gate's captures. On a CPU without native bf16 the
    plugin would run fp32, so nothing is measured and bf16 is not accepted."""
    from smh_ml.hardware import has_native_bf16

    if not has_native_bf16():
        return not_measured(BF16, "this CPU has no native bf16 (avx512_bf16 or amx_bf16): not measured",
                            tolerance, gate)
    try:
        from smh_ml.deploy.openvino_runtime import OpenVinoSession
    except ImportError as exc:  # the optional extra is not installed
        return not_measured(BF16, f"OpenVINO is not installed ({exc}): not measured", tolerance, gate)
    from smh_ml.deploy.runtime import load_onnx

    if fp32_accuracy is None:
        fp32_accuracy = accuracy(load_onnx(fp32_path, threads), fp32_path, gate, classes)
    bf16_accuracy = accuracy(OpenVinoSession(fp32_path, threads, "bf16"), fp32_path, gate, classes)
    return judge(BF16, fp32_accuracy, bf16_accuracy, tolerance, gate)


def record_verdicts(onnx_path: Path | str, verdicts: list[Verdict]) -> Path:
    """Write the verdicts into the model card of ``onnx_path`` (``fast_paths``), atomically."""
    from smh_ml.export.onnx import update_card

    card = read_card(onnx_path)
    paths = dict(card.fast_paths or {}) | {v.path: v.to_dict() for v in verdicts}
    return update_card(onnx_path, fast_paths=paths)
