"""The MLflow model folder a registered version holds: the ``python_function`` flavour
(raw captures in, decisions out) with its code and pinned deploy requirements, and the
``onnx`` flavour on the same file. MLflow is imported lazily.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from smh_ml.tracking.tracker import PYFUNC_LOADER


def deploy_requirements() -> list[str]:
    """The pip requirements of the deploy path: this package's base dependencies and its
    ``deploy`` extra, pinned to the versions installed here (pyproject.toml declares ranges),
    so a served model declares every import it needs at the version it was tested with."""
    from importlib.metadata import PackageNotFoundError, requires, version

    from packaging.requirements import Requirement

    try:
        declared = requires("smh-ml") or []
    except PackageNotFoundError:  # running from a source tree that was never installed
        declared = []
    keep = []
    for item in declared:
        requirement, _, marker = item.partition(";")
        marker = marker.replace(" ", "").replace("'", '"')
        if not marker or marker == 'extra=="deploy"':
            name = Requirement(requirement).name
            try:
                keep.append(f"{name}=={version(name)}")
            except PackageNotFoundError:
                keep.append(requirement.strip())
    return keep


def model_signature():
    """Raw capture images in (base64 text), Algorithm 1 out: the pyfunc's contract."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(Schema([ColSpec("string", "image")]),
                          Schema([ColSpec("string", "label"), ColSpec("long", "patch"),
                                  ColSpec("double", "probability"), ColSpec("string", "verdict"),
                                  ColSpec("double", "unknown_score"), ColSpec("string", "note")]))


def _small_example(path: Path, side: int = 512) -> bytes:
    """A capture file as the input example, shrunk to ``side`` px at most (a 1 MB line-scan
    JPEG would be stored in every registered version), still a valid capture."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        if max(image.size) <= side:
            return path.read_bytes()
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.convert("L").save(buffer, format="PNG")
        return buffer.getvalue()


def loader_modules(root: str = PYFUNC_LOADER) -> list[str]:
    """The ``smh_ml`` modules the pyfunc loader imports, followed through every module-level
    ``import``/``from`` of this package (the packages' ``__init__`` included): what a
    registered model must carry, and no more (no training, GAN or export code)."""
    import ast
    import importlib.util

    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, AttributeError):  # a name imported from a module, not a submodule
            continue
        if spec is None or spec.origin is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the enclosing packages
        tree = ast.parse(Path(spec.origin).read_text())
        for node in tree.body:  # module level only: lazy imports inside functions stay lazy
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == "smh_ml"]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "smh_ml":
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]  # submodules imported by name
    return sorted(seen)


def _loader_code(dest: Path) -> Path:
    """``dest/smh_ml``: the files of :func:`loader_modules`, in the package's layout."""
    import importlib.util

    for name in loader_modules():
        origin = Path(importlib.util.find_spec(name).origin)
        target = dest.joinpath(*name.split("."))
        target = target / "__init__.py" if origin.name == "__init__.py" else target.with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
    return dest / "smh_ml"


def package_model(onnx_path: Path | str, out_dir: Path | str, int8_path: Path | str | None = None,
                  input_example: Path | str | None = None) -> Path:
    """An MLflow model folder a fresh environment can serve: the ``python_function`` flavour
    (raw capture images in, decisions out, by :data:`PYFUNC_LOADER`) with its code
    (``code/smh_ml``: :func:`loader_modules` only), its pip requirements (:func:`deploy_requirements`), a signature and,
    given a capture file, an input example (shrunk to 512 px); the ``onnx`` flavour beside it on the same file
    (``data/model.onnx``, tensors in and out). A gated int8 model rides along as
    ``data/model.int8.onnx`` (``smh-ml predict --int8``)."""
    import base64
    import tempfile

    import mlflow.pyfunc
    import onnx
    import pandas as pd
    from mlflow.models import Model

    out_dir = Path(out_dir)
    example = None
    if input_example is not None:
        example = pd.DataFrame({"image": [base64.b64encode(_small_example(Path(input_example))).decode("ascii")]})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "model.onnx"
        shutil.copyfile(onnx_path, data)
        code = _loader_code(Path(tmp) / "code")
        mlflow.pyfunc.save_model(str(out_dir), loader_module=PYFUNC_LOADER, data_path=str(data),
                                 code_paths=[str(code)], signature=model_signature(),
                                 input_example=example, pip_requirements=deploy_requirements())
    model = Model.load(str(out_dir / "MLmodel"))
    model.add_flavor("onnx", onnx_version=onnx.__version__, data="data/model.onnx",
                     providers=["CPUExecutionProvider"], code=None)
    model.save(str(out_dir / "MLmodel"))
    if int8_path is not None:
        shutil.copyfile(int8_path, out_dir / "data" / "model.int8.onnx")
    return out_dir
