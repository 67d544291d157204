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
    users = {_relative(p) for p in _sources(LIBRARY, PIPELINES)
             if any(m == "mlflow" or m.startswith("mlflow.") for m in _imports(p))}
    outside = {u for u in users if not u.startswith("smh_ml/tracking/")} - {"smh_ml/deploy/pyfunc.py"}
    assert not outside, f"MLflow imported outside smh_ml/tracking/: {sorted(outside)}"


def test_tracking_defaults_are_spelled_once():
    for literal in ("sqlite:///mlflow/mlflow.db", '"smh-defect-classifier"', '"smh-defect-recognition"'):
        spelled = {_relative(p) for p in _sources(LIBRARY, PIPELINES) if literal in p.read_text()}
        assert spelled == {"smh_ml/tracking/tracker.py"}, f"{literal} spelled in {sorted(spelled)}"


def test_the_library_never_imports_dagster_or_the_pipelines():
    for path in _sources(LIBRARY):
        heavy = {m for m in _imports(path) if m.split(".")[0] in ("dagster", "pipelines")}
        assert not heavy, f"{_relative(path)} imports {sorted(heavy)}"


def test_the_deploy_package_imports_no_training_code():
    training = ("smh_ml.training", "smh_ml.export", "smh_ml.models", "smh_ml.workflows", "smh_ml.synthetic",
                "smh_ml.evaluation", "smh_ml.data.datasets")
    for path in _sources(LIBRARY / "deploy", LIBRARY / "tracking") + [
            LIBRARY / "decision.py", LIBRARY / "data" / "patching.py", LIBRARY / "data" / "captures.py"]:
        bad = {m for m in _imports(path) if m.split(".")[0] in ("torch", "torchvision", "torchmetrics", "sklearn")
               or any(m == t or m.startswith(t + ".") for t in training)}
        assert not bad, f"{_relative(path)} (deploy path) imports {sorted(bad)}"


def test_a_classifier_folder_has_one_writer():
    """model.pt + report.json of every trained classifier come from checkpoint.save_classifier."""
    writers = {_relative(p) for p in _sources(LIBRARY, PIPELINES) if '"model.pt"' in p.read_text()
               and "torch.save(" in p.read_text()}
    assert writers == {"smh_ml/training/checkpoint.py"}, sorted(writers)


def test_pipelines_hold_no_training_loop():
    for path in _sources(PIPELINES):
        text = path.read_text()
        for marker in ("optimizer.step", "loss.backward", "torch.save(", "export_onnx(", "check_parity("):
            assert marker not in text, f"{_relative(path)} contains {marker!r}: ML logic belongs in smh_ml"


def test_mlflow_folder_is_not_a_package():
    assert not (REPO / "mlflow" / "__init__.py").exists()


# The library by concern, bottom to top: a package imports only packages on lower layers
# (shared modules at the bottom), never one beside or above it.
LAYERS = (
    ("io", "decision", "hardware", "config", "paths"),
    ("models",),
    ("data", "evaluation"),
    ("deploy",),
    ("training",),
    ("export", "synthetic", "tracking"),
    ("workflows",),
    ("cli", "serving"),
)
LAYER_OF = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _unit(path: Path) -> str:
    return path.relative_to(LIBRARY).parts[0].removesuffix(".py")


def test_every_module_of_the_library_sits_in_a_layer():
    units = {_unit(p) for p in _sources(LIBRARY)} - {"__init__"}
    assert units == set(LAYER_OF), (f"not in LAYERS: {sorted(units - set(LAYER_OF))}; "
                                    f"gone: {sorted(set(LAYER_OF) - units)}")


def test_packages_import_only_the_layers_below_them():
    for path in _sources(LIBRARY):
        here = _unit(path)
        if here == "__init__":
            continue
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "smh_ml" or len(parts) == 1 or parts[1] == here:
                continue
            assert LAYER_OF[parts[1]] < LAYER_OF[here], (
                f"{_relative(path)} imports {module}: {here} (layer {LAYER_OF[here]}) may import only lower layers")


def test_top_level_modules_are_the_shared_ones_only():
    """Everything else belongs to a package of its concern."""
    top = sorted(p.stem for p in LIBRARY.glob("*.py") if p.stem != "__init__")
    assert top == ["cli", "decision", "hardware", "io", "paths", "serving"], top
