"""Inference engine: raw capture in, Algorithm 1 decision out, on onnxruntime.

Everything a decision needs travels in the ONNX file's metadata (class names, clean class,
patch geometry), so ``Engine("model.onnx")`` is the whole deployment. One batch of patches
per image; decoding and pre-processing of the next image overlap the model on the current
one (:meth:`Engine.decide_paths`). The same engine sits behind the CLI (``smh-ml predict``)
and the MLflow pyfunc (``smh_ml.deploy.pyfunc``). No torch: a line PC installs only the
``deploy`` extra.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smh_ml.data.captures import (
    CaptureError,
    capture_problem,
    file_type_problem,
    read_gray_noted,
    to_gray8,
)
from smh_ml.data.patching import background_bbox, capture_patches, untile
from smh_ml.decision import decide, unknown_scores
from smh_ml.deploy.runtime import load_onnx, onnx_predict, onnx_predict_with_distance, read_card

UNKNOWN = "unknown"
"""The verdict of a capture unlike every class the model was trained on."""


@dataclass(frozen=True)
class Decision:
    label: str
    label_index: int
    patch: int | None
    """Index (row-major) of the deciding patch, None for a clean image."""
    probability: float
    """Probability of the decided class on the deciding patch (clean: the least clean patch's
    clean probability)."""
    defect_probability: list[float]
    """Per patch: 1 - P(clean), for heat maps."""
    unknown_score: float = 0.0
    """How unlike every training class the capture looks (smh_ml.decision.unknown_scores)."""
    unknown: bool = False
    """The score reached the model's unknown threshold: a defect type it may never have seen."""

    @property
    def verdict(self) -> str:
        """What the line acts on: the class, or ``unknown`` for review."""
        return UNKNOWN if self.unknown else self.label

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prediction:
    """One file's outcome: a decision, or the reason there is none."""

    path: Path
    decision: Decision | None
    patches: np.ndarray | None = None
    """The (tiles, P, P) uint8 patches the model saw, for heat maps."""
    error: str | None = None
    note: str | None = None
    """What was done to the file before it was decided (a conversion to 8-bit grey)."""


class Engine:
    def __init__(self, model_path: Path | str, threads: int | None = None, background_level: int | None = None,
                 threshold: float | None | str = "model", fast_decode: bool = False, unknown: bool = True,
                 backend: str = "auto"):
        """``background_level``: None = the level the model was trained with (its metadata).
        ``threshold``: ``"model"`` = the threshold calibrated on the validation captures and
        stored in the model (arg-max when it has none), None = the paper's plain arg-max
        rule, a number = that threshold. ``fast_decode``: decode JPEGs at a reduced DCT scale
        (1/2, 1/4, 1/8) when the frame is much larger than the patch grid; patches then differ
        slightly from a full decode, so it is off by default and training always decodes fully.
        ``unknown``: flag captures whose unknown score reaches the model's calibrated threshold.
        ``backend``: ``auto`` (the default: :func:`choose_backend`), ``onnxruntime``, or
        ``openvino`` / ``openvino-bf16`` (the optional extra, :mod:`smh_ml.deploy.openvino_runtime`)
        for the same file."""
        self.path = Path(model_path)
        self.fast_decode = fast_decode
        self.decode_margin = 2.0
        """With ``fast_decode``: how many times the patch grid a reduced frame must keep."""
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX model file")
        self.card = read_card(self.path)
        """The model card: classes, geometry, threshold, recipe and provenance of the export."""
        self.class_names: list[str] = list(self.card.classes)
        self.clean_index = self.card.clean_index
        self.geometry = self.card.geometry
        self.precision = self.card.precision
        self.recipe: dict | None = self.card.recipe
        """The recipe from the data the model was trained under (geometry and reasons), if any."""
        self.background_level = int(self.card.background_level if background_level is None else background_level)
        self.threshold = self.card.threshold if threshold == "model" else threshold
        self.unknown_threshold = self.card.unknown_threshold if unknown else None
        """From this unknown score a capture's verdict is ``unknown`` (None: never)."""
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"{self.path}: threshold {self.threshold!r} is not a probability in [0, 1]")
        # the gate judged bf16 under the model's own rule: another rule runs the arithmetic it was set on
        own_rule = threshold == "model"
        self.backend = choose_backend(self.card, "onnxruntime" if backend == "auto" and not own_rule else backend)
        """What runs the network (``backend`` resolved: ``auto`` becomes one of the others)."""
        self.runtime = _runtime(self.path, threads or os.cpu_count(), self.backend)

    def patches(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 capture -> (tiles, P, P) uint8: background cropped, resized, tiled."""
        return capture_patches(image, self.geometry, self.background_level)

    def read(self, path: Path | str) -> np.ndarray:
        """A capture file as (H, W) uint8, refused (CaptureError) when it cannot be decided
        (smh_ml.data.captures.capture_problem, the rule validation applies); see ``fast_decode``."""
        return self.read_noted(path)[0]

    def read_noted(self, path: Path | str) -> tuple[np.ndarray, str | None]:
        """:meth:`read`, with the note that the capture was converted to 8-bit grey (None when
        it is grey). A name validation refuses (a GIF, a WebP) is refused with its words."""
        problem = file_type_problem(path)
        if problem is not None:
            raise CaptureError(path, problem)
        read = None
        if self.fast_decode:
            try:
                read = self._read_reduced(Path(path), self.decode_margin)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning):
                read = None  # the full decode below reports the file's problem clearly
        if read is None:
            read = read_gray_noted(path, max_pixels=self.card.max_pixels)
        return self._checked(read[0], path), read[1]

    def _checked(self, image: np.ndarray, name: Path | str) -> np.ndarray:
        problem = capture_problem(image, self.background_level)
        if problem is not None:
            raise CaptureError(name, problem)
        return image

    def _read_reduced(self, path: Path, margin: float = 2.0) -> tuple[np.ndarray, str | None] | None:
        """One decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps the whole frame at
        least ``margin`` times the patch grid; None (= decode fully) when no scale qualifies
        or the product's crop at that scale is smaller than the grid. Measured: entropy
        decoding dominates, so 1/2 saves a quarter of the decode and most of the resize."""
        with Image.open(path) as im:
            if im.format != "JPEG":
                return None
            width, height = im.size
            if self.card.max_pixels is not None and width * height > self.card.max_pixels:
                return None  # the full read refuses it from the header, with the reason
            target_h, target_w = self.geometry.size
            factors = [f for f in (2, 4, 8) if height / f >= margin * target_h and width / f >= margin * target_w]
            if not factors:
                return None
            mode = im.mode
            im.draft("L", (-(-width // factors[-1]), -(-height // factors[-1])))
            image = to_gray8(im, path, convert=True)
        top, bottom, left, right = background_bbox(image, self.background_level)
        if bottom - top < target_h or right - left < target_w:
            return None
        return image, None if mode == "L" else f"converted to 8-bit grey from mode {mode}"

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        """(tiles, P, P) uint8 -> (tiles, classes) probabilities: one model call per image."""
        return onnx_predict(self.runtime, patches)

    def scores(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and each patch's feature distance (None for a model without feature
        statistics), from the same model call."""
        return onnx_predict_with_distance(self.runtime, patches)

    def decide_probs(self, probs: np.ndarray, distances: np.ndarray | None = None) -> Decision:
        """Algorithm 1 on a capture's patch ``probs``; with ``distances`` (its patches' feature
        distances) the unknown score and verdict too."""
        index, patch = decide(probs, self.clean_index, self.threshold)
        defect = (1.0 - probs[:, self.clean_index]).astype(float).tolist()
        if patch is None:
            probability = float(probs[:, self.clean_index].min())
        else:
            probability = float(probs[patch, index])
        score = float(unknown_scores([distances])[0]) if distances is not None else 0.0
        unknown = distances is not None and self.unknown_threshold is not None \
            and score >= float(self.unknown_threshold)
        return Decision(self.class_names[index], index, patch, probability, defect, round(score, 6), unknown)

    def decide_array(self, image: np.ndarray) -> Decision:
        return self.decide_probs(*self.scores(self.patches(image)))

    def decide_bytes(self, data: bytes, name: str = "<bytes>") -> Prediction:
        """One encoded capture (a REST request's image), read, checked and noted as files are;
        an unusable one raises (a request is refused whole, where a folder goes on)."""
        image, note = read_gray_noted(data, name, self.card.max_pixels)
        return Prediction(Path(name), self.decide_array(self._checked(image, name)), note=note)

    def decide_paths(self, paths: Iterable[Path | str], overlap: bool = True) -> Iterator[Prediction]:
        """Decide many files in order; with ``overlap`` the next file is decoded and
        pre-processed on a second thread while the model runs on the current one. A file
        that cannot be read gives a Prediction with ``error`` and the others go on."""
        paths = [Path(p) for p in paths]
        if not paths:
            return
        if not overlap:
            for path in paths:
                yield self._finish(path, self._load(path))
            return
        with ThreadPoolExecutor(1, thread_name_prefix="decode") as loader:
            pending = loader.submit(self._load, paths[0])
            for i, path in enumerate(paths):
                loaded = pending.result()
                if i + 1 < len(paths):
                    pending = loader.submit(self._load, paths[i + 1])
                yield self._finish(path, loaded)

    def heatmap_image(self, patches: np.ndarray) -> np.ndarray:
        """The resized capture the patches came from, for overlays."""
        return untile(patches, self.geometry.rows, self.geometry.cols)

    def _load(self, path: Path) -> tuple[np.ndarray, str | None] | str:
        try:
            image, note = self.read_noted(path)
            return self.patches(image), note
        except CaptureError as exc:
            return str(exc)

    def _finish(self, path: Path, loaded: tuple[np.ndarray, str | None] | str) -> Prediction:
        if isinstance(loaded, str):
            return Prediction(path, None, None, loaded)
        patches, note = loaded
        return Prediction(path, self.decide_probs(*self.scores(patches)), patches, note=note)


BACKENDS = ("auto", "onnxruntime", "openvino", "openvino-bf16")
"""``auto``: OpenVINO bf16 where the precision gate accepted it for this model, the CPU has
native bf16 and the ``openvino`` extra is installed (1.3-1.8x onnxruntime fp32 in the same
benchmark run, docs/DEPLOY.md); onnxruntime everywhere else."""


def choose_backend(card, requested: str = "auto") -> str:
    """The backend ``requested`` resolves to for a model with ``card`` on this machine."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"backend {requested!r}: expected one of {', '.join(BACKENDS)}")
        return requested
    import importlib.util

    from smh_ml.hardware import has_native_bf16

    bf16 = "openvino-bf16"
    # an int8 file is its own path: a verdict on the fp32 file says nothing about it
    if (card.precision == "fp32" and card.accepts(bf16) and has_native_bf16()
            and importlib.util.find_spec("openvino") is not None):
        return bf16
    return "onnxruntime"


def _runtime(path: Path, threads: int, backend: str):
    """What runs the network: an onnxruntime session, or OpenVINO's answering like one."""
    if backend == "onnxruntime":
        return load_onnx(path, threads)
    if backend in ("openvino", "openvino-bf16"):
        from smh_ml.deploy.openvino_runtime import OpenVinoSession

        return OpenVinoSession(path, threads, "bf16" if backend.endswith("bf16") else "f32")
    raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def is_capture(path: Path) -> bool:
    """A file to decide, by its name: not a mask, not hidden. The rule of ``predict`` on
    folders; ``watch`` also waits for names still being written (:func:`is_partial_name`),
    which ``predict`` refuses with validation's words. Any other file is decided or refused
    with its reason (a GIF, a README: "unknown file type", as validation says), never passed
    over in silence."""
    from smh_ml.data.captures import is_mask_file

    return not (is_mask_file(path) or path.name.startswith("."))


def image_files(inputs: Iterable[Path | str]) -> list[Path]:
    """Files and folders (recursively) -> the files to decide (:func:`is_capture`; none inside
    a hidden folder), sorted."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and is_capture(p)
                            and not any(part.startswith(".") for part in p.relative_to(item).parts[:-1]))
        elif item.exists():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return found

