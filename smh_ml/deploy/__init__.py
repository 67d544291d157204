"""The deploy path: an exported ONNX classifier, raw captures in, Algorithm 1 decisions out.

``card`` (the model card: what a shipped model needs to run, the input scaling), ``runtime``
(loading the ONNX file into onnxruntime, reading the card), ``engine`` (capture -> patches ->
probabilities -> decision, the same preprocessing as training) and ``pyfunc`` (the MLflow
``python_function`` flavour). It imports numpy, Pillow, pandas, onnxruntime and the capture,
patching and decision modules, never torch or the training code: a line PC installs
``pip install .[deploy]``.
"""

from smh_ml.deploy.card import ModelCard, to_input
from smh_ml.deploy.engine import Decision, Engine, Prediction, image_files
from smh_ml.deploy.runtime import INPUT, OUTPUT, load_onnx, onnx_metadata, onnx_predict, read_card

__all__ = ["INPUT", "OUTPUT", "Decision", "Engine", "ModelCard", "Prediction", "image_files", "onnx_metadata",
           "onnx_predict", "read_card", "load_onnx", "to_input"]
