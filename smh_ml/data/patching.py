"""Image patching (paper IV-B): crop the background, resize, cut into non-overlapping tiles.

The geometry (resize size and tile grid) comes from the profile: the paper resized to
2048x512 because the mean aspect H:W of its captures was 4:1 (Eq. 5-7). For another capture
set the same equations give another grid, e.g. magnetic tile is about 1.2:1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Geometry:
    """Resize to (rows*patch, cols*patch), then cut rows x cols tiles of patch x patch."""

    rows: int
    cols: int
    patch: int

    @property
    def size(self) -> tuple[int, int]:
        return self.rows * self.patch, self.cols * self.patch

    @property
    def tiles(self) -> int:
        return self.rows * self.cols

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_size(cls, size: tuple[int, int], patch: int) -> Geometry:
        height, width = size
        if height % patch or width % patch:
            raise ValueError(f"size {size} is not a whole number of {patch}-px patches")
        return cls(height // patch, width // patch, patch)


def mean_aspect(heights: Sequence[float], widths: Sequence[float]) -> float:
    """Eq. 5-7: R_avg(H:W) = mean(H) / mean(W) over all captures."""
    heights = np.asarray(heights, dtype=np.float64)
    widths = np.asarray(widths, dtype=np.float64)
    if heights.size == 0 or heights.size != widths.size:
        raise ValueError("mean_aspect needs one height per width, and at least one image")
    if np.any(widths <= 0) or np.any(heights <= 0):
        raise ValueError("heights and widths must be positive")
    return float(heights.mean() / widths.mean())


def derive_geometry(heights: Sequence[float], widths: Sequence[float], patch: int,
                    tiles: int) -> Geometry:
    """A tile grid with about ``tiles`` patches whose aspect follows Eq. 5-7.

    With the paper's captures (mean aspect about 4.1) and 16 tiles this gives 8 x 2, i.e.
    the paper's 2048 x 512 at 256-px patches.
    """
    aspect = mean_aspect(heights, widths)
    cols = max(1, round(math.sqrt(tiles / aspect)))
    rows = max(1, round(aspect * cols))
    return Geometry(rows, cols, patch)


def _largest_run(mask: np.ndarray, gap: int) -> tuple[int, int] | None:
    """[start, stop) of the longest run of True, bridging gaps of up to ``gap`` False."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    stops = np.concatenate((idx[breaks], [idx[-1]])) + 1
    best = int(np.argmax(stops - starts))
    return int(starts[best]), int(stops[best])


def background_bbox(image: np.ndarray, level: int = 16) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the product in a capture with a dark background.

    A column (row) belongs to the product when more than half of its pixels are brighter
    than ``level``; isolated noise pixels never reach that. The longest such run is kept,
    bridging short dark gaps (a dark defect across the part), and a product touching the
    image edge simply runs to the edge.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a single-channel (H, W) image, got shape {image.shape}")
    bright = image > level
    cols = _largest_run(bright.mean(axis=0) > 0.5, gap=max(1, image.shape[1] // 100))
    if cols is None:
        raise ValueError(f"no product found: no column is mostly brighter than {level}")
    left, right = cols
    rows = _largest_run(bright[:, left:right].mean(axis=1) > 0.5,
                        gap=max(1, image.shape[0] // 100))
    if rows is None:
        raise ValueError(f"no product found: no row is mostly brighter than {level}")
    top, bottom = rows
    return top, bottom, left, right


def crop_background(image: np.ndarray, level: int = 16) -> np.ndarray:
    """Remove the dark background around the product (see :func:`background_bbox`)."""
    top, bottom, left, right = background_bbox(image, level)
    return image[top:bottom, left:right]


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) uint8 image to ``size`` (H, W), antialiased bilinear."""
    height, width = size
    if image.shape == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def tile(image: np.ndarray, patch: int) -> np.ndarray:
    """Cut an (H, W) array whose sides are multiples of ``patch`` into (N, patch, patch), row-major."""
    height, width = image.shape
    if height % patch or width % patch:
        raise ValueError(f"image of {height}x{width} is not a whole number of {patch}-px patches")
    rows, cols = height // patch, width // patch
    return (image.reshape(rows, patch, cols, patch).swapaxes(1, 2)
            .reshape(rows * cols, patch, patch))


def untile(patches: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`tile`: (rows * cols, P, P) row-major -> (rows * P, cols * P)."""
    n, p, q = patches.shape
    if n != rows * cols:
        raise ValueError(f"{n} patches do not fill a {rows} x {cols} grid")
    return patches.reshape(rows, cols, p, q).swapaxes(1, 2).reshape(rows * p, cols * q)


def capture_patches(image: np.ndarray, geometry: Geometry, background_level: int,
                    box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """THE preprocessing of a capture, for training patches and for the inference engine alike:
    crop the dark background (``box``, or found at ``background_level``), resize to the
    geometry's size, cut row-major tiles. Every parameter travels in the model's metadata."""
    top, bottom, left, right = box if box is not None else background_bbox(image, background_level)
    return tile(resize(image[top:bottom, left:right], geometry.size), geometry.patch)


def preprocessing_metadata(geometry: Geometry, background_level: int) -> dict:
    """What a runtime needs to cut a capture exactly as training did."""
    return {"geometry": geometry.to_dict(), "background_level": int(background_level),
            "resize": "PIL bilinear (antialiased) to rows*patch x cols*patch",
            "input_scale": "grey levels / 255 as float32"}


def to_patches(image: np.ndarray, size: tuple[int, int] = (2048, 512), patch: int = 256) -> np.ndarray:
    """Resize to ``size`` (H, W) and cut non-overlapping tiles, row-major: (N, patch, patch)."""
    Geometry.from_size(size, patch)  # validates the size
    return tile(resize(image, size), patch)


def mask_coverage(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a bool mask to ``size`` as the covered fraction of each output pixel (box filter)."""
    height, width = size
    as_float = Image.fromarray(mask.astype(np.float32), mode="F")
    return np.asarray(as_float.resize((width, height), Image.Resampling.BOX), dtype=np.float32)


def patch_defect_stats(mask: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per patch: the fraction of its area that is defect, and its share of all defect pixels."""
    coverage = tile(mask_coverage(mask, geometry.size), geometry.patch)
    sums = coverage.reshape(coverage.shape[0], -1).sum(axis=1, dtype=np.float64)
    fraction = sums / float(geometry.patch * geometry.patch)
    total = sums.sum()
    share = sums / total if total > 0 else np.zeros_like(sums)
    return np.clip(fraction, 0.0, 1.0), share


def label_patches(capture_label: str, clean_class: str, fraction: np.ndarray | None,
                  share: np.ndarray | None, min_fraction: float,
                  min_share: float) -> tuple[list[str], list[bool], list[str]]:
    """Label each patch of a capture from its mask statistics.

    Returns (labels, usable, reasons). A patch of a defect capture takes the capture's class
    when it holds enough defect pixels (``min_fraction`` of its area, or ``min_share`` of the
    capture's defect pixels, and always the patch holding the most); a patch with no defect
    pixels is clean; one with a few is ambiguous and not usable for training. A defect
    capture without a mask cannot label its patches.
    """
    if capture_label == clean_class:
        n = len(fraction) if fraction is not None else None
        if n is None:
            raise ValueError("clean capture: pass the number of patches through fraction")
        return [clean_class] * n, [True] * n, ["clean capture"] * n
    if fraction is None or share is None:
        raise ValueError("defect capture without mask statistics")
    labels, usable, reasons = [], [], []
    best = int(np.argmax(share)) if share.sum() > 0 else -1
    for i, (frac, sh) in enumerate(zip(fraction, share)):
        if frac >= min_fraction or sh >= min_share or i == best:
            labels.append(capture_label), usable.append(True), reasons.append("defect pixels")
        elif frac == 0:
            labels.append(clean_class), usable.append(True), reasons.append("no defect pixels")
        else:
            labels.append(capture_label), usable.append(False)
            reasons.append("ambiguous: too few defect pixels")
    return labels, usable, reasons
