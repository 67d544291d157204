"""The ONNX side of a classifier export: loading it into onnxruntime, the card, probabilities.

The export (``smh_ml.export.onnx``) writes one self-contained ``.onnx`` file: input ``patches``
float32 (batch, 1, P, P) holding grey levels / 255 (:func:`smh_ml.deploy.card.to_input`),
dynamic batch; output ``probs`` (batch, classes) after softmax and, when the model carries
feature statistics, ``distance`` (batch,) (each patch's distance to the nearest training
class: the unknown score's input); the model card as metadata (:func:`read_card`). Nothing
here imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from smh_ml.deploy.card import ModelCard, to_input

INPUT, OUTPUT, DISTANCE = "patches", "probs", "distance"


def load_onnx(path: Path | str, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime inference runner of ``path`` on the CPU, ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_metadata(path: Path | str) -> dict:
    """The metadata stored by the export, JSON values decoded."""
    raw = load_onnx(path).get_modelmeta().custom_metadata_map
    out = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_card(path: Path | str) -> ModelCard:
    """The model card of an export (a clear error names the file when it is not one)."""
    return ModelCard.from_metadata(onnx_metadata(path), str(path))


def onnx_predict(sess: ort.InferenceSession, patches: np.ndarray) -> np.ndarray:
    """(N, P, P) uint8 patches -> (N, classes) probabilities."""
    return sess.run([OUTPUT], {INPUT: to_input(patches)})[0]


def has_distance(sess: ort.InferenceSession) -> bool:
    return DISTANCE in {o.name for o in sess.get_outputs()}


def onnx_predict_with_distance(sess: ort.InferenceSession, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, P, P) uint8 patches -> probabilities and patch distances (None for a model without
    feature statistics), from one run."""
    if not has_distance(sess):
        return onnx_predict(sess, patches), None
    probs, distance = sess.run([OUTPUT, DISTANCE], {INPUT: to_input(patches)})
    return probs, distance
