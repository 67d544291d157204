"""MLflow pyfunc flavour of a registered classifier: raw capture images -> decisions.

``mlflow models serve -m models:/<name>@champion`` loads this module's ``_load_pyfunc``
with the packaged ONNX file (``smh_ml.tracking.packaging.package_model`` writes the folder). Requests
carry a DataFrame with an ``image`` column of base64-encoded image files (PNG, JPEG, ...);
each row gets the Algorithm 1 decision.
Malformed rows are refused with a reason (MLflow turns the error into HTTP 400), never a
crash. No MLflow import is needed until an error has to be raised.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

import pandas as pd

from smh_ml.data.captures import CaptureError
from smh_ml.deploy.engine import Engine

IMAGE_COLUMN = "image"
OUTPUT_COLUMNS = ("label", "patch", "probability", "verdict", "unknown_score", "note")
"""One row a capture: the known class Algorithm 1 decides, the verdict the line acts on
(the class, or ``unknown`` when the capture is unlike every trained class), and what was
done to the image first (a conversion to 8-bit grey, as predict and watch say; empty: none)."""


def _bad_request(message: str) -> Exception:
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
    except ImportError:  # used without MLflow
        return ValueError(message)


def _image_bytes(value, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_request(f"row {row}: '{IMAGE_COLUMN}' is not valid base64") from None
    raise _bad_request(f"row {row}: '{IMAGE_COLUMN}' must be base64 text, got {type(value).__name__}")


THREADS_ENV = "SMH_ORT_THREADS"
"""onnxruntime threads of each serving process (``smh-ml serve`` shares the cores among its
workers); unset: every core."""


class DecisionModel:
    def __init__(self, onnx_path: Path | str):
        threads = os.environ.get(THREADS_ENV)
        self.engine = Engine(onnx_path, threads=int(threads) if threads else None)

    def predict(self, model_input, params=None) -> pd.DataFrame:
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            raise _bad_request(f"expected a table with an '{IMAGE_COLUMN}' column of base64 images")
        if model_input.empty:
            raise _bad_request("no images in the request")
        rows = []
        for i, value in enumerate(model_input[IMAGE_COLUMN].tolist()):
            data = _image_bytes(value, i)
            try:
                decided = self.engine.decide_bytes(data, f"row {i}")
            except (CaptureError, OSError, ValueError) as exc:
                raise _bad_request(f"row {i}: not a usable capture image ({exc})") from None
            decision = decided.decision
            rows.append({"label": decision.label, "patch": -1 if decision.patch is None else decision.patch,
                         "probability": decision.probability, "verdict": decision.verdict,
                         "unknown_score": decision.unknown_score, "note": decided.note or ""})
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _load_pyfunc(data_path: str) -> DecisionModel:
    """MLflow's entry point: ``data_path`` is the packaged ONNX file (or its folder)."""
    path = Path(data_path)
    if path.is_dir():
        path = path / "model.onnx"
    return DecisionModel(path)

