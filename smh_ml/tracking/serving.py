"""REST serving of a registered classifier (``smh-ml serve``): MLflow's scoring server in
uvicorn worker processes, inside the body limit of :class:`smh_ml.deploy.rest.BodyLimit`."""

from __future__ import annotations

import os

from smh_ml.deploy.rest import MAX_BODY_BYTES, BodyLimit

MODEL_ENV = "SMH_SERVE_MODEL"
"""The local folder of the MLflow model each worker loads."""
MAX_BYTES_ENV = "SMH_SERVE_MAX_BYTES"


def create_app() -> BodyLimit:
    """The app of one worker (uvicorn's factory): the model folder named by :data:`MODEL_ENV`
    in MLflow's scoring server, inside :class:`BodyLimit`."""
    from mlflow.pyfunc import load_model, scoring_server

    folder = os.environ.get(MODEL_ENV)
    if not folder:
        raise RuntimeError(f"{MODEL_ENV} names no model folder; start the server with 'smh-ml serve'")
    return BodyLimit(scoring_server.init(load_model(folder)), int(os.environ.get(MAX_BYTES_ENV, MAX_BODY_BYTES)))


def serve(model_folder: str, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
          max_bytes: int = MAX_BODY_BYTES) -> None:
    """Run ``workers`` uvicorn processes serving ``model_folder`` (a local MLflow model)."""
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from smh_ml.deploy.pyfunc import THREADS_ENV

    os.environ[MODEL_ENV], os.environ[MAX_BYTES_ENV] = str(model_folder), str(int(max_bytes))
    # the workers share the cores: each runs onnxruntime on its share, not on all of them
    os.environ.setdefault(THREADS_ENV, str(max(1, (os.cpu_count() or 1) // workers)))
    uvicorn.run("smh_ml.tracking.serving:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning")
