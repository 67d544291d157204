"""Inference engine: raw capture in, Algorithm 1 decision out, on onnxruntime.

Everything a decision needs travels in the ONNX file's metadata (class names, clean class,
patch geometry), so ``Engine("model.onnx")`` is the whole deployment. One batch of patches
per image; decoding and pre-processing of the next image overlaps the model on the
current one (:meth:`Engine.decide_paths`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smh_ml.captures import read_gray, to_gray8
from smh_ml.decision import decide
from smh_ml.export import INPUT, OUTPUT, onnx_metadata, session
from smh_ml.patching import Geometry, background_bbox, resize, tile


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

    def to_dict(self) -> dict:
        return asdict(self)


class Engine:
    def __init__(self, model_path: Path | str, threads: int | None = None, background_level: int = 16,
                 threshold: float | None = None):
        self.path = Path(model_path)
        meta = onnx_metadata(self.path)
        self.class_names: list[str] = list(meta["class_names"])
        self.clean_index = self.class_names.index(meta.get("clean_class", self.class_names[0]))
        self.geometry = Geometry(**meta["geometry"])
        self.background_level = background_level
        self.threshold = threshold
        self.session = session(self.path, threads or os.cpu_count())

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 capture -> (tiles, 1, P, P) float32 model input."""
        top, bottom, left, right = background_bbox(image, self.background_level)
        patches = tile(resize(image[top:bottom, left:right], self.geometry.size), self.geometry.patch)
        return (patches.astype(np.float32) / 255.0)[:, None]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: batch})[0]

    def _decide_probs(self, probs: np.ndarray) -> Decision:
        index, patch = decide(probs, self.clean_index, self.threshold)
        defect = (1.0 - probs[:, self.clean_index]).astype(float).tolist()
        if patch is None:
            probability = float(probs[:, self.clean_index].min())
        else:
            probability = float(probs[patch, index])
        return Decision(self.class_names[index], index, patch, probability, defect)

    def decide_array(self, image: np.ndarray) -> Decision:
        return self._decide_probs(self.probabilities(self.preprocess(image)))

    def decide_bytes(self, data: bytes, name: str = "<bytes>") -> Decision:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return self.decide_array(to_gray8(im, name, convert=True))

    def decide_paths(self, paths: Iterable[Path | str]) -> Iterator[tuple[Path, Decision]]:
        """Decide many files; the next file is decoded and pre-processed while the model runs."""
        paths = [Path(p) for p in paths]
        if not paths:
            return
        with ThreadPoolExecutor(1) as loader:
            pending = loader.submit(self._load, paths[0])
            for i, path in enumerate(paths):
                batch = pending.result()
                if i + 1 < len(paths):
                    pending = loader.submit(self._load, paths[i + 1])
                yield path, self._decide_probs(self.probabilities(batch))

    def _load(self, path: Path) -> np.ndarray:
        return self.preprocess(read_gray(path, convert=True))


def image_files(inputs: Iterable[Path | str]) -> list[Path]:
    """Files and folders (recursively) -> capture image paths, masks excluded, sorted."""
    from smh_ml.captures import IMAGE_EXTENSIONS, is_mask_file

    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                            and not is_mask_file(p) and not p.name.startswith("."))
        elif item.exists():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    return found
