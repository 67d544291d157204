"""The line PC install: `pip install '.[deploy]'` into a fresh venv (no torch, no Dagster, no
full MLflow) reads the default sqlite registry and decides captures with `smh-ml predict`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

pytestmark = pytest.mark.e2e


def test_the_deploy_extra_alone_predicts_from_the_sqlite_registry(tmp_path):
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.tracking.packaging import package_model
    from smh_ml.tracking.tracker import DEFAULT_MODEL_NAME, Tracker

    store = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    tracker = Tracker(store, str(tmp_path / "mlflow" / "artifacts"), "e", DEFAULT_MODEL_NAME)
    card = ModelCard("baseline_cnn", ("defect-free", "scratch"), Geometry(1, 2, 32))
    package = package_model(export_onnx(build("baseline_cnn", 2, 32).eval(), tmp_path / "m.onnx", card),
                            tmp_path / "package")
    run = tracker.client().create_run(tracker.experiment_id()).info.run_id
    assert tracker.register(run, package, 0.9, "t1", 0.0, {})["promote"]

    venv = tmp_path / "line-pc"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "-c", str(REPO / "constraints.txt"), f"{REPO}[deploy]"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch'), u.find_spec('dagster'), u.find_spec('mlflow.server'))"],
                           capture_output=True, text=True)
    assert check.stdout.split()[:2] == ["None", "None"], check.stdout

    image = np.zeros((48, 96), np.uint8)
    image[4:-4, 4:-4] = 128
    Image.fromarray(image).save(tmp_path / "part.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env |= {"MLFLOW_TRACKING_URI": store, "SMH_MODEL_CACHE": str(tmp_path / "cache"),
            "MLFLOW_DISABLE_TELEMETRY": "true"}
    result = subprocess.run([str(venv / "bin" / "smh-ml"), "predict", str(tmp_path / "part.png"), "--json"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout[result.stdout.index("["):])
    assert rows[0]["label"] in card.classes and Path(rows[0]["path"]).name == "part.png"
