"""ONNX export of a trained patch classifier (the torch side; ``smh_ml.deploy`` runs it).

One self-contained ``.onnx`` file: input ``patches`` float32 (batch, 1, P, P) in [0, 1],
dynamic batch; output ``probs`` (batch, classes) after softmax and, for a model with feature
statistics, ``distance`` (batch,): each patch's distance to the nearest training class. The model card
(:class:`smh_ml.deploy.card.ModelCard`: classes, geometry, threshold, provenance) rides along
as metadata, so a runtime needs nothing else. A parity
check against torch fails loudly when the two disagree by more than the tolerance.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from smh_ml.deploy.card import ModelCard
from smh_ml.deploy.runtime import DISTANCE, INPUT, OUTPUT, load_onnx, onnx_predict, read_card
from smh_ml.io import atomic_write_bytes
from smh_ml.models.feature_distance import FeatureDistance
from smh_ml.training.loop import predict_proba


class ParityError(AssertionError):
    pass


class WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(patches), dim=1)


class WithSoftmaxAndDistance(nn.Module):
    """Probabilities and each patch's feature distance (smh_ml.models.feature_distance)."""

    def __init__(self, model: FeatureDistance):
        super().__init__()
        self.model = model

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, distance = self.model.logits_and_distance(patches)
        return torch.softmax(logits, dim=1), distance


def write_card(proto: onnx.ModelProto, card: ModelCard) -> onnx.ModelProto:
    """Replace ``proto``'s metadata with ``card`` (the one place an export's metadata is written)."""
    del proto.metadata_props[:]
    for key, value in card.to_metadata().items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return proto


def update_card(path: Path | str, **changes) -> Path:
    """Rewrite the card of the ONNX file at ``path`` with ``changes`` (ModelCard fields),
    atomically: a reader sees the old file or the new one, never a half-written one."""
    card = dataclasses.replace(read_card(path), **changes)
    proto = onnx.load(str(path))
    return atomic_write_bytes(path, write_card(proto, card).SerializeToString())


def export_onnx(model: nn.Module, path: Path | str, card: ModelCard, opset: int = 18) -> Path:
    """Export ``model`` to ``path`` (atomically) with its model card as metadata."""
    model = model.to("cpu").eval()
    patch = card.geometry.patch
    example = torch.rand(2, 1, patch, patch)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        distance = isinstance(model, FeatureDistance)
        wrapped = WithSoftmaxAndDistance(model) if distance else WithSoftmax(model)
        torch.onnx.export(wrapped.eval(), (example,), str(tmp_file), dynamo=True,
                          input_names=[INPUT], output_names=[OUTPUT, DISTANCE] if distance else [OUTPUT],
                          opset_version=opset,
                          dynamic_shapes={"patches": {0: batch}}, external_data=False,
                          verbose=False)
        proto = onnx.load(str(tmp_file))
    write_card(proto, card)
    onnx.checker.check_model(proto)
    buffer = io.BytesIO()
    onnx.save(proto, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def check_parity(model: nn.Module, path: Path | str, arrays: np.ndarray, tol: float = 1e-4) -> float:
    """Max |p_torch - p_onnx| over ``arrays`` (uint8 patches); raises ParityError above ``tol``."""
    if len(arrays) == 0:
        raise ValueError("parity needs at least one patch")
    expected = predict_proba(model.to("cpu"), arrays)
    runtime = load_onnx(path)  # loaded once for every chunk
    got = np.concatenate([onnx_predict(runtime, arrays[i:i + 256]) for i in range(0, len(arrays), 256)])
    diff = float(np.abs(expected - got).max())
    if not diff <= tol:
        raise ParityError(f"{path}: ONNX and torch probabilities differ by {diff:.3g} > {tol:g} "
                          f"on {len(arrays)} patches")
    return diff
