"""The model card: one typed record of what a shipped classifier needs to run and what it
was measured to do.

It is written once, at export, into the ONNX file's metadata (one key a field, JSON values,
so files exported before the card existed read the same way), and read back by the engine,
the MLflow pyfunc, int8 quantization, the benchmarks and the registry tags. The input
contract lives here only: :func:`to_input` is the scaling both training and every runtime
apply to uint8 patches. Nothing here imports torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from smh_ml.data.patching import Geometry, preprocessing_metadata

INPUT_LAYOUT = "float32 (batch, 1, patch, patch) grey levels / 255"
"""The model input: uint8 patches scaled by 1/255, one channel, dynamic batch."""
MAX_PIXELS_FACTOR = 4
"""A capture four times the area of the largest one trained on is still decided (a camera
set to a longer frame); beyond that it is another camera, or an attack on the decoder."""
DEFAULT_BACKGROUND_LEVEL = 16
"""The level of exports from before the background level travelled with the model."""


def to_input(patches: np.ndarray) -> np.ndarray:
    """(N, P, P) uint8 patches -> (N, 1, P, P) float32 grey levels / 255: the model input."""
    return (np.asarray(patches).astype(np.float32) * np.float32(1 / 255.0))[:, None]


@dataclass(frozen=True)
class ModelCard:
    """A shipped classifier: how to cut and scale a capture, its classes and decision rule,
    where it came from and its figures."""

    arch: str
    classes: tuple[str, ...]
    geometry: Geometry
    background_level: int = DEFAULT_BACKGROUND_LEVEL
    clean_class: str | None = None
    """The defect-free class (the first of ``classes`` unless named)."""
    threshold: float | None = None
    """Defect probability above which a capture is defective (calibrated on validation
    captures); None: the paper's arg-max rule."""
    max_pixels: int | None = None
    """Largest capture (width x height) a runtime decodes: :data:`MAX_PIXELS_FACTOR` times the
    largest training capture; a larger one is refused from its header. None: Pillow's limit."""
    unknown_threshold: float | None = None
    """Unknown score (smh_ml.decision.unknown_scores: the largest patch feature distance, the
    model's ``distance`` output) from which a capture is flagged as a defect type the model never
    saw (calibrated on validation captures); None: never."""
    profile: str = ""
    recipe: dict[str, Any] | None = None
    """The recipe from the data it was trained under (geometry, tiles, reasons), if ``auto``."""
    test_accuracy: float | None = None
    precision: str = "fp32"
    fast_paths: dict[str, dict[str, Any]] | None = None
    """The precision gate's verdicts (smh_ml.export.precision_gate): for each faster path
    (``openvino-bf16``, ``int8``), whether it kept fp32's accuracy on the validation captures;
    ``Engine(backend="auto")`` takes only an accepted one."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Anything else recorded at export (the test set's id, the data version)."""

    def __post_init__(self) -> None:
        if self.clean_class is None:
            object.__setattr__(self, "clean_class", self.classes[0])
        if self.clean_class not in self.classes:
            raise ValueError(f"clean class {self.clean_class!r} is not among the classes {list(self.classes)}")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold {self.threshold!r} is not a probability in [0, 1]")

    @property
    def rule(self) -> str:
        return "argmax" if self.threshold is None else "threshold"

    @property
    def clean_index(self) -> int:
        return self.classes.index(self.clean_class)

    def preprocessing(self) -> dict[str, Any]:
        """Everything a runtime needs to cut a capture exactly as training did."""
        return preprocessing_metadata(self.geometry, self.background_level)

    def to_metadata(self) -> dict[str, str]:
        """The ONNX metadata entries (string values; JSON for anything not a string)."""
        fields = {"class_names": list(self.classes), "clean_class": self.clean_class,
                  "geometry": self.geometry.to_dict(), "patch": str(self.geometry.patch), "input": INPUT_LAYOUT,
                  "arch": self.arch, "profile": self.profile, "threshold": self.threshold,
                  "unknown_threshold": self.unknown_threshold, "max_pixels": self.max_pixels,
                  "preprocessing": self.preprocessing(), "recipe": self.recipe,
                  "test_accuracy": self.test_accuracy, "precision": self.precision, **self.provenance}
        if self.fast_paths is not None:
            fields["fast_paths"] = self.fast_paths
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], source: str = "model") -> ModelCard:
        """The card of an export, from its decoded metadata (:func:`smh_ml.deploy.runtime.onnx_metadata`).
        A clear error names ``source`` when it is not an smh-ml classifier."""
        missing = {"class_names", "geometry"} - set(meta)
        if missing:
            raise ValueError(f"{source}: not an smh-ml classifier export (metadata lacks {sorted(missing)})")
        known = {"class_names", "clean_class", "geometry", "patch", "input", "arch", "profile", "threshold",
                 "unknown_threshold", "max_pixels", "preprocessing", "recipe", "test_accuracy", "precision",
                 "fast_paths"}
        preprocessing = meta.get("preprocessing") or {}
        try:
            return cls(arch=str(meta.get("arch", "")), classes=tuple(meta["class_names"]),
                       geometry=Geometry(**meta["geometry"]),
                       background_level=int(preprocessing.get("background_level", DEFAULT_BACKGROUND_LEVEL)),
                       clean_class=meta.get("clean_class"), threshold=meta.get("threshold"),
                       unknown_threshold=meta.get("unknown_threshold"), max_pixels=meta.get("max_pixels"),
                       profile=str(meta.get("profile", "")), recipe=meta.get("recipe"),
                       test_accuracy=meta.get("test_accuracy"), precision=str(meta.get("precision", "fp32")),
                       fast_paths=meta.get("fast_paths"),
                       provenance={k: v for k, v in meta.items() if k not in known})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def accepts(self, path: str) -> bool:
        """Whether the precision gate accepted ``path`` for this model (False when not judged)."""
        return bool((self.fast_paths or {}).get(path, {}).get("accepted"))

    def tags(self) -> dict[str, str]:
        """Registry tags of a version holding this model: what a reviewer filters on."""
        tags = {"arch": self.arch, "classes": ",".join(self.classes), "clean_class": str(self.clean_class),
                "rule": self.rule, "geometry": f"{self.geometry.rows}x{self.geometry.cols}x{self.geometry.patch}",
                "profile": self.profile}
        if self.threshold is not None:
            tags["threshold"] = f"{float(self.threshold):.6g}"
        if self.recipe:
            tags["recipe"] = str(self.recipe.get("geometry", ""))
        return tags
