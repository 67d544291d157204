"""The deploy path runs an exported model without torch or the training code."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from smh_ml.data.patching import Geometry
from smh_ml.deploy.card import ModelCard
from smh_ml.export.onnx import export_onnx
from smh_ml.models import build

NO_TORCH = """
import json, sys
from typer.testing import CliRunner
import smh_ml.deploy, smh_ml.deploy.pyfunc, smh_ml.tracking.tracker, smh_ml.serving
from smh_ml.cli import app
result = CliRunner().invoke(app, ["predict", sys.argv[1], "--model", sys.argv[2], "--json"])
assert result.exit_code == 0, result.output
heavy = sorted(m for m in ("torch", "torchvision", "sklearn", "dagster", "smh_ml.training.loop", "smh_ml.export.onnx")
               if m in sys.modules)
print(json.dumps({"decisions": json.loads(result.stdout), "heavy": heavy}))
"""


def test_predict_and_pyfunc_never_import_torch(tmp_path):
    geometry = Geometry(rows=1, cols=2, patch=32)
    model = build("baseline_cnn", 3, 32).eval()
    onnx_path = export_onnx(model, tmp_path / "model.onnx",
                            ModelCard("baseline_cnn", ("defect-free", "pits", "scratches"), geometry,
                                      background_level=16))
    capture = np.full((80, 120), 8, np.uint8)
    capture[10:70, 10:110] = np.random.default_rng(0).integers(60, 200, (60, 100))
    Image.fromarray(capture).save(tmp_path / "part.png")
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path / "part.png"), str(onnx_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"the deploy path imported {report['heavy']}"
    assert len(report["decisions"]) == 1
    assert report["decisions"][0]["label"] in {"defect-free", "pits", "scratches"}


def _third_party_imports(paths) -> set[str]:
    import ast

    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            found |= {n.split(".")[0] for n in names}
    return {m for m in found if m not in sys.stdlib_module_names and m != "smh_ml"}


def test_the_packaged_model_declares_every_import_its_loader_needs(tmp_path):
    """By inspection: the MLflow model ships the code of smh_ml.deploy and pins a requirement
    for every third-party module the serving path imports (so a fresh environment serves it)."""
    from importlib.metadata import packages_distributions

    from conftest import REPO

    from smh_ml.tracking.packaging import package_model

    onnx_path = export_onnx(build("baseline_cnn", 3, 32).eval(), tmp_path / "m.onnx",
                            ModelCard("baseline_cnn", ("defect-free", "pits", "scratches"),
                                      Geometry(rows=1, cols=2, patch=32)))
    big = np.full((3000, 1400), 8, np.uint8)
    big[100:2900, 100:1300] = np.random.default_rng(0).integers(60, 200, (2800, 1200))
    Image.fromarray(big).save(tmp_path / "capture.png")  # about 3 MB: never stored whole in a version
    folder = package_model(onnx_path, tmp_path / "model", input_example=tmp_path / "capture.png")
    example = json.loads((folder / "input_example.json").read_text())
    assert len(json.dumps(example)) < 400_000
    assert (folder / "code" / "smh_ml" / "deploy" / "pyfunc.py").is_file()
    assert "loader_module: smh_ml.deploy.pyfunc" in (folder / "MLmodel").read_text()
    # the loader's code and no more: no training, GAN, export or pipeline code rides along
    shipped = {p.relative_to(folder / "code").as_posix() for p in (folder / "code").rglob("*.py")}
    assert {"smh_ml/deploy/engine.py", "smh_ml/data/captures.py", "smh_ml/decision.py"} <= shipped
    assert not any(p.startswith(("smh_ml/training", "smh_ml/synthetic", "smh_ml/export", "smh_ml/workflows"))
                   for p in shipped), sorted(shipped)
    required = {line.split("==")[0].strip().lower() for line in (folder / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    # what the pyfunc loader imports: the deploy package and the modules it uses
    serving = [REPO / "smh_ml" / name for name in ("data/captures.py", "decision.py", "data/patching.py", "io.py")]
    serving += sorted((REPO / "smh_ml" / "deploy").glob("*.py"))
    serving = [p for p in serving if p.relative_to(REPO).as_posix() in shipped]  # what the model carries
    distributions = packages_distributions()
    for module in _third_party_imports(serving):
        names = {d.lower() for d in distributions.get(module, [])}
        if module == "mlflow":
            names |= {"mlflow-skinny"}  # the pyfunc needs only the skinny client
        assert names & required, f"{module} is imported by the serving path but not in requirements.txt"
