"""The deploy path: an exported ONNX classifier, raw captures in, Algorithm 1 decisions out.

``runtime`` (onnxruntime session, metadata, input scaling), ``engine`` (capture -> patches ->
probabilities -> decision, the same preprocessing as training) and ``pyfunc`` (the MLflow
``python_function`` flavour). It imports numpy, Pillow, pandas, onnxruntime and the capture,
patching and decision modules, never torch or the training code: a line PC installs
``pip install .[deploy]``.
"""

from smh_ml.deploy.engine import Decision, Engine, Prediction, image_files
from smh_ml.deploy.runtime import INPUT, OUTPUT, onnx_metadata, onnx_predict, session, to_input

__all__ = ["INPUT", "OUTPUT", "Decision", "Engine", "Prediction", "image_files", "onnx_metadata",
           "onnx_predict", "session", "to_input"]
