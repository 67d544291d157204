"""int8 static quantization of the exported classifier, behind the precision gate.

onnxruntime's ``quantize_static`` (QDQ format, int8 weights, uint8 activations) is
calibrated on real training patches, stratified by class so rare defect classes set
activation ranges too. The int8 model is an alternative artifact: it is
written only when its Algorithm 1 accuracy on the VALIDATION captures is within ``tolerance``
of the fp32 model's on the same captures (smh_ml.export.precision_gate); otherwise it is
refused and any older int8 file next to it is removed, so a stale one cannot be picked up.
Softmax stays in float so decision probabilities are not quantized to 1/256.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from smh_ml.deploy.runtime import INPUT, load_onnx
from smh_ml.export.precision_gate import (
    GateCaptures,
    Verdict,
    decisions,
    gated_bf16,
    judge,
    not_measured,
    record_verdicts,
)
from smh_ml.io import atomic_write_bytes
from smh_ml.training.loop import class_names, test_patches

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Concat", "Flatten", "Reshape"]


class GateRefused(RuntimeError):
    """The int8 model costs more accuracy than the tolerance allows."""


@dataclass
class GateReport:
    accepted: bool
    fp32_accuracy: float
    int8_accuracy: float
    tolerance: float
    captures: int
    """How many captures the gate decided (``split``: validation, never the test captures)."""
    split: str
    calibration_patches: int
    int8_path: str | None
    verdict: dict | None = None
    """The precision gate's verdict (smh_ml.export.precision_gate.Verdict.to_dict)."""

    @property
    def drop(self) -> float:
        return self.fp32_accuracy - self.int8_accuracy

    def to_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop}


class _Patches(CalibrationDataReader):
    def __init__(self, patches: np.ndarray, batch: int = 32):
        # equal batches: the histogram calibrators cannot stack a shorter last one
        batch = min(batch, len(patches))
        self.batches = [(patches[i:i + batch].astype(np.float32) / 255.0)[:, None]
                        for i in range(0, len(patches) - batch + 1, batch)]
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def calibration_patches(patch_set, count: int, seed: int = 0, exclude: set[str] | None = None) -> np.ndarray:
    """Up to ``count`` usable TRAIN patches, the same share for every class (rare ones whole),
    none from the captures in ``exclude`` (the gate's, which judge the result)."""
    index = patch_set.index
    train = index[(index["split"] == "train") & index["usable"].astype(bool)
                  & ~index["capture_id"].astype(str).isin(exclude or set())]
    labels = sorted(train["label"].unique())
    if not labels:
        raise ValueError("no usable training patches to calibrate int8 on")
    rng = np.random.default_rng(seed)
    per_class = max(1, count // len(labels))
    chosen: list[int] = []
    for label in labels:
        rows = train.loc[train["label"] == label, "patch_index"].to_numpy()
        chosen += rng.choice(rows, size=min(per_class, len(rows)), replace=False).tolist()
    return patch_set.patches[np.sort(np.asarray(chosen))]


def fp32_islands(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that stay in float after the convolutional trunk: every node other
    than a convolution with none after it (pooling, the fully connected head, the averaging of
    test-time flips, the feature distance behind the unknown verdict, softmax). The logits
    and the squared Mahalanobis terms are where int8's rounding shows most, and they cost
    little time. The first convolution stays int8: kept in float it left the whole trunk at
    fp32 speed on onnxruntime 1.32 (the Inception-CNN of the simulated default: 64.8 ms a
    capture against 27.5 ms, the same held-out accuracy; docs/DEPLOY.md)."""
    nodes = list(model.graph.node)  # ONNX graphs are stored in topological order
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    conv_after = [False] * len(nodes)
    for i in reversed(range(len(nodes))):
        conv_after[i] = any(nodes[j].op_type == "Conv" or conv_after[j]
                            for out in nodes[i].output for j in consumers.get(out, ()))
    return [node.name for i, node in enumerate(nodes) if not conv_after[i] and node.op_type != "Conv"]


def calibration_batch(patch: int) -> int:
    """Patches a calibration run takes: 32 of 64 px, fewer of larger ones. The calibration graph
    reads every activation, so they are all alive at once: at 32 patches of 256 px (four flip
    replicas of EfficientNet-Lite0) it took 19.6 GB, beyond a 24-GB machine's comfort."""
    return max(1, min(32, 32 * 64 * 64 // (patch * patch)))


def quantize_int8(fp32_path: Path | str, out_path: Path | str, calibration: np.ndarray,
                  per_channel: bool = False, islands: bool = False) -> Path:
    """Static int8 quantization of ``fp32_path`` to ``out_path`` (atomic), metadata kept; with
    ``islands`` the nodes of :func:`fp32_islands` stay in float."""
    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one patch")
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        keep = fp32_islands(onnx.load(str(prepared))) if islands else []
        quantize_static(str(prepared), str(quantized), _Patches(calibration, calibration_batch(calibration.shape[-1])),
                        quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=keep,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        model = onnx.load(str(quantized))
    # the fp32 file's card verbatim (no decode and re-encode of its values), precision replaced;
    # the fp32 file's precision verdicts are not this file's
    source = onnx.load(str(fp32_path))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        if prop.key not in ("precision", "fast_paths"):
            model.metadata_props.append(onnx.StringStringEntryProto(key=prop.key, value=prop.value))
    model.metadata_props.append(onnx.StringStringEntryProto(key="precision", value="int8"))
    return atomic_write_bytes(out_path, model.SerializeToString())


def onnx_accuracy(path: Path | str, patch_set, clean_class: str, threads: int | None = None) -> tuple[float, int]:
    """Algorithm 1 accuracy of an ONNX model on the held-out test captures, and their count,
    with the decision rule the model ships with (its calibrated threshold, when it has one).
    For reports only: the gate decides on validation captures."""
    captures, groups = test_patches(patch_set)
    if not groups:
        raise ValueError("the patch set has no held-out test captures to score")
    names = class_names(set(patch_set.captures["label"]), clean_class)
    return decisions(load_onnx(path, threads), path, GateCaptures(captures, groups, "test"), names)[0], len(groups)


def gated_int8(fp32_path: Path | str, patch_set, clean_class: str, gate: GateCaptures | None,
               tolerance: float = 0.005, calibration_count: int = 512, per_channel: bool = False,
               out_path: Path | str | None = None, seed: int = 0, calibration: np.ndarray | None = None,
               islands: bool = True) -> GateReport:
    """Quantize, decide ``gate``'s captures with fp32 and int8, keep int8 only within tolerance.

    ``out_path`` defaults to ``model.int8.onnx`` beside the fp32 file. On refusal that file
    does not exist afterwards. ``calibration`` (uint8 patches) replaces the stratified
    sample of the patch set's training patches outside the gate's captures. Without a gate
    (no validation captures) nothing is quantized and int8 is refused unmeasured.
    """
    if not tolerance >= 0:
        raise ValueError(f"int8 tolerance must be >= 0, got {tolerance}")
    fp32_path = Path(fp32_path)
    out_path = Path(out_path) if out_path else fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    if gate is None:
        out_path.unlink(missing_ok=True)
        verdict = not_measured("int8", "no validation captures (val_fraction 0): not measured", tolerance, gate)
        return GateReport(False, float("nan"), float("nan"), tolerance, 0, "none", 0, None, verdict.to_dict())
    if calibration is None:
        calibration = calibration_patches(patch_set, calibration_count, seed,
                                          exclude=set(gate.captures["capture_id"].astype(str)))
    names = class_names(set(patch_set.captures["label"]), clean_class)
    fp32 = decisions(load_onnx(fp32_path), fp32_path, gate, names)
    with tempfile.TemporaryDirectory() as tmp:
        candidate = quantize_int8(fp32_path, Path(tmp) / "int8.onnx", calibration, per_channel, islands)
        verdict = judge("int8", fp32, decisions(load_onnx(candidate), candidate, gate, names), tolerance, gate)
        if verdict.accepted:
            atomic_write_bytes(out_path, candidate.read_bytes())
        else:
            out_path.unlink(missing_ok=True)
    return GateReport(verdict.accepted, fp32[0], float(verdict.accuracy), tolerance, verdict.captures, gate.split,
                      len(calibration), str(out_path) if verdict.accepted else None, verdict.to_dict())


def gate_fast_paths(fp32_path: Path | str, patch_set, clean_class: str, gate: GateCaptures | None, deploy,
                    int8_tolerance: float | None = None) -> tuple[GateReport, Verdict]:
    """The precision gate whole: int8 (within ``int8_tolerance``, default the profile's
    ``deploy.int8_tolerance``) and OpenVINO bf16 (always the profile's) on ``gate``'s captures,
    both verdicts written into the model card of ``fp32_path``."""
    tolerance = deploy.int8_tolerance if int8_tolerance is None else int8_tolerance
    int8 = gated_int8(fp32_path, patch_set, clean_class, gate, tolerance, deploy.calibration_patches,
                      deploy.per_channel, islands=deploy.fp32_islands)
    bf16 = gated_bf16(fp32_path, gate, class_names(set(patch_set.captures["label"]), clean_class),
                      deploy.int8_tolerance)
    record_verdicts(fp32_path, [int8.verdict, bf16.to_dict()])
    return int8, bf16
