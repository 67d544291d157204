"""The import graph and the one-place rules, as tests (no network, no training)."""

import ast
from pathlib import Path

from conftest import REPO

LIBRARY = REPO / "smh_ml"
PIPELINES = REPO / "pipelines"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_mlflow_is_called_from_the_tracking_module_only():
    # the pyfunc raises MLflow's own exception type so that `mlflow models serve` answers HTTP 400
    allowed = {"smh_ml/tracking.py", "smh_ml/deploy/pyfunc.py"}
    users = {_relative(p) for p in _sources(LIBRARY, PIPELINES)
             if any(m == "mlflow" or m.startswith("mlflow.") for m in _imports(p))}
    assert users <= allowed, f"MLflow imported outside smh_ml/tracking.py: {sorted(users - allowed)}"


def test_tracking_defaults_are_spelled_once():
    for literal in ("sqlite:///mlflow/mlflow.db", '"smh-defect-classifier"', '"smh-defect-recognition"'):
        spelled = {_relative(p) for p in _sources(LIBRARY, PIPELINES) if literal in p.read_text()}
        assert spelled == {"smh_ml/tracking.py"}, f"{literal} spelled in {sorted(spelled)}"


def test_the_library_never_imports_dagster_or_the_pipelines():
    for path in _sources(LIBRARY):
        heavy = {m for m in _imports(path) if m.split(".")[0] in ("dagster", "pipelines")}
        assert not heavy, f"{_relative(path)} imports {sorted(heavy)}"


def test_the_deploy_package_imports_no_training_code():
    training = {"torch", "torchvision", "torchmetrics", "sklearn", "smh_ml.training", "smh_ml.export",
                "smh_ml.models", "smh_ml.experiments", "smh_ml.classifier_experiment", "smh_ml.datasets"}
    for path in _sources(LIBRARY / "deploy") + [LIBRARY / "tracking.py", LIBRARY / "decision.py",
                                               LIBRARY / "patching.py", LIBRARY / "captures.py"]:
        bad = {m for m in _imports(path) if m in training or m.split(".")[0] in ("torch", "torchvision")}
        assert not bad, f"{_relative(path)} (deploy path) imports {sorted(bad)}"


def test_a_classifier_folder_has_one_writer():
    """model.pt + report.json of every trained classifier come from experiments.save_classifier."""
    writers = {_relative(p) for p in _sources(LIBRARY, PIPELINES) if '"model.pt"' in p.read_text()
               and "torch.save(" in p.read_text()}
    assert writers == {"smh_ml/experiments.py"}, sorted(writers)


def test_pipelines_hold_no_training_loop():
    for path in _sources(PIPELINES):
        text = path.read_text()
        for marker in ("optimizer.step", "loss.backward", "torch.save(", "export_onnx(", "check_parity("):
            assert marker not in text, f"{_relative(path)} contains {marker!r}: ML logic belongs in smh_ml"


def test_mlflow_folder_is_not_a_package():
    assert not (REPO / "mlflow" / "__init__.py").exists()
