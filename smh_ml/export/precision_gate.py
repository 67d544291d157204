"""Faster arithmetic only where it keeps the decisions: the precision gate.

int8 (onnxruntime QDQ) and bf16 (OpenVINO's CPU plugin on a processor with native bf16) run the
exported classifier faster than fp32. Each is accepted only when its Algorithm 1 accuracy on the
VALIDATION captures, whole training captures held out of fitting (the ones the checkpoint and the
threshold were chosen on), is within ``tolerance`` of fp32's on the same captures. The held-out
test captures are never used: a path chosen on them would make the test figure a choice.

The verdicts travel in the model card (``fast_paths``), so ``Engine(backend="auto")`` runs a
path only where it was measured to keep fp32's accuracy. Only accuracy is judged (and how many
captures were decided alike is recorded); the unknown score under bf16 is not.
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
    same_decisions: int | None = None
    """Captures whose label the candidate decided as fp32 did (equal accuracy can hide swaps)."""
    hardware: dict[str, Any] | None = None
    """The CPU the verdict was measured on (smh_ml.hardware.describe)."""

    @property
    def drop(self) -> float | None:
        if self.fp32_accuracy is None or self.accuracy is None:
            return None
        return self.fp32_accuracy - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop": self.drop}


def validation_gate_captures(patch_set, clean_class: str, val_fraction: float, seed: int) -> GateCaptures | None:
    """The validation captures of a model trained with ``val_fraction`` and ``seed`` on
    ``patch_set`` (the same split training drew); None when it drew none (``val_fraction`` 0):
    then nothing can be judged, and every faster path is refused unmeasured."""
    from smh_ml.config.schema import TrainConfig
    from smh_ml.training.loop import class_names, validation_captures

    names = class_names(set(patch_set.captures["label"]), clean_class)
    val = validation_captures(patch_set, names, TrainConfig(val_fraction=val_fraction, seed=seed))
    if val is None or not val.groups:
        return None
    return GateCaptures(val.captures, val.groups, "validation")


def decisions(runtime, onnx_path: Path | str, gate: GateCaptures, classes: list[str]) -> tuple[float, list[str]]:
    """Algorithm 1 accuracy of ``runtime`` (an onnxruntime session or anything answering like
    one) with the decision rule of the model in ``onnx_path`` (its calibrated threshold), and
    the label it decided for each capture."""
    from smh_ml.deploy.runtime import onnx_predict
    from smh_ml.training.loop import evaluate_images

    threshold = read_card(onnx_path).threshold
    metrics = evaluate_images(lambda arrays: onnx_predict(runtime, arrays), gate.captures, gate.groups,
                              classes, threshold=threshold)
    return float(metrics["accuracy"]), [d["predicted"] for d in metrics["decisions"]]


def judge(path: str, fp32: tuple[float, list[str]], candidate: tuple[float, list[str]], tolerance: float,
          gate: GateCaptures) -> Verdict:
    """Accepted when the candidate decides like fp32: it loses at most ``tolerance`` (a fraction)
    of fp32's accuracy AND changes at most that fraction of the decisions. Net accuracy alone
    lets a lucky correction hide a new error: on the simulated default's 73 validation captures
    an int8 file changed one decision for the better and passed, then lost 3 of 122 test
    captures (docs/DEPLOY.md). ``fp32`` and ``candidate`` are :func:`decisions` on the same
    captures."""
    from smh_ml.hardware import describe

    if not tolerance >= 0:
        raise ValueError(f"{path} tolerance must be >= 0, got {tolerance}")
    (fp32_accuracy, fp32_labels), (accuracy, labels) = fp32, candidate
    same = sum(a == b for a, b in zip(fp32_labels, labels))
    changed = len(labels) - same
    accepted = (fp32_accuracy - accuracy <= tolerance + 1e-12) and changed <= tolerance * len(labels) + 1e-12
    reason = (f"{accuracy:.4f} vs fp32 {fp32_accuracy:.4f} on {len(gate.groups)} {gate.split} captures, "
              f"{changed} decision(s) changed: {'within' if accepted else 'outside'} the tolerance of {tolerance:g}")
    return Verdict(path, accepted, fp32_accuracy, accuracy, tolerance, len(gate.groups), gate.split, reason,
                   same, describe())


def not_measured(path: str, reason: str, tolerance: float, gate: GateCaptures | None) -> Verdict:
    """A path that cannot be measured here (no validation captures, no bf16, no OpenVINO):
    refused, with the reason."""
    return Verdict(path, False, None, None, tolerance, len(gate.groups) if gate else 0,
                   gate.split if gate else "none", reason)


def gated_bf16(fp32_path: Path | str, gate: GateCaptures | None, classes: list[str], tolerance: float,
               fp32: tuple[float, list[str]] | None = None, threads: int | None = None) -> Verdict:
    """OpenVINO bf16 against fp32 (``fp32``: its :func:`decisions`, measured here when None) on
    the gate's captures. On a CPU without native bf16 the plugin would run fp32, so nothing is
    measured and bf16 is not accepted; nor without the ``openvino`` extra or validation captures."""
    import importlib.util

    from smh_ml.hardware import has_native_bf16

    if gate is None:
        return not_measured(BF16, "no validation captures (val_fraction 0): not measured", tolerance, gate)
    if not has_native_bf16():
        return not_measured(BF16, "this CPU has no native bf16 (avx512_bf16 or amx_bf16): not measured",
                            tolerance, gate)
    if importlib.util.find_spec("openvino") is None:
        return not_measured(BF16, "OpenVINO is not installed (the 'openvino' extra): not measured", tolerance, gate)
    from smh_ml.deploy.openvino_runtime import OpenVinoSession
    from smh_ml.deploy.runtime import load_onnx

    if fp32 is None:
        fp32 = decisions(load_onnx(fp32_path, threads), fp32_path, gate, classes)
    candidate = decisions(OpenVinoSession(fp32_path, threads, "bf16"), fp32_path, gate, classes)
    return judge(BF16, fp32, candidate, tolerance, gate)


def record_verdicts(onnx_path: Path | str, verdicts: list[dict[str, Any]]) -> Path:
    """Write the verdicts (:meth:`Verdict.to_dict`) into the model card of ``onnx_path``
    (``fast_paths``, one entry a path), atomically."""
    from smh_ml.export.onnx import update_card

    card = read_card(onnx_path)
    paths = dict(card.fast_paths or {}) | {v["path"]: v for v in verdicts}
    return update_card(onnx_path, fast_paths=paths)
