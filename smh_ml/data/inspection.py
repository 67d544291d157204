"""One decode of a capture for everything asked of it before patching.

Validation asks whether the inference engine could decide a capture, the recipe from the
data measures its product box and its largest defect, and patching crops to that box: three
steps, one question each, of the same pixels. :func:`inspect_capture` decodes the capture
(and its mask) once and answers all three; the answer is kept in memory under the files'
path, size and modification time (a few numbers a capture, never the pixels), so the later
steps of a run read it back and a changed file is decoded again. A mask is decoded here only
when its defect is asked for (the recipe from the data), not for validation. Patching itself decodes
the capture a second time, to cut it: holding every decoded capture from the first pass
until the geometry of the whole set is known would cost memory in proportion to the set.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from smh_ml.data.captures import CaptureError, capture_problem, read_gray, read_mask
from smh_ml.data.patching import background_bbox

CACHE_SIZE = 200_000
"""Captures whose inspection is kept (about 200 bytes each)."""


@dataclass(frozen=True)
class Inspection:
    """What one decode of a capture says."""

    problem: str | None
    """Why the engine could not decide it (capture_problem, or the decoder's message); None
    when it can."""
    box: tuple[int, int, int, int] | None
    """(top, bottom, left, right) of the product; None when no product was found."""
    defect_extent: float = float("nan")
    """The largest connected defect's box side (geometric mean) over the product box's, from
    the mask; NaN without one."""
    defect_area: float = float("nan")
    """Defect pixels' share of the product box, from the mask; NaN without one."""


def largest_defect(mask: np.ndarray) -> tuple[float, float]:
    """(geometric-mean box side of the largest connected defect, defect share) of a mask."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return 0.0, 0.0
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    box = ndimage.find_objects(labels)[int(np.argmax(sizes))]
    side = math.sqrt((box[0].stop - box[0].start) * (box[1].stop - box[1].start))
    return side, float(mask.mean())


def _stamp(path: str | None) -> tuple[int, ...] | None:
    """What tells a file's versions apart: a replacement with the same size and a preserved
    modification time still gets another inode or change time."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino, info.st_ctime_ns


class _Undecodable(Exception):
    """Raised inside the cache so that a failed decode is not remembered (a permission fixed
    later changes no stamp)."""


@lru_cache(maxsize=CACHE_SIZE)
def _inspect(path: str, stamp: tuple[int, ...] | None, level: int) -> Inspection:
    try:
        image = read_gray(path, convert=True)
    except CaptureError as exc:
        raise _Undecodable(exc.problem) from None
    try:
        box = background_bbox(image, level)
    except ValueError:
        box = None
    return Inspection(capture_problem(image, level), box)


@lru_cache(maxsize=CACHE_SIZE)
def _measure_mask(mask_path: str, stamp: tuple[int, ...] | None, box: tuple[int, int, int, int]
                  ) -> tuple[float, float]:
    top, bottom, left, right = box
    side, area = largest_defect(read_mask(mask_path)[top:bottom, left:right])
    return side / math.sqrt((bottom - top) * (right - left)), area


def inspect_capture(path: Path | str, background_level: int, mask_path: Path | str | None = None) -> Inspection:
    """The capture at ``path`` (its colours read as grey) at ``background_level``, with its
    largest defect measured when ``mask_path`` is given; each file is decoded on the first
    call only, while it is unchanged (the mask only when someone asks for its defect)."""
    path = str(path)
    try:
        found = _inspect(path, _stamp(path), int(background_level))
    except _Undecodable as exc:
        return Inspection(str(exc), None)
    if found.box is None or not isinstance(mask_path, (str, Path)):
        return found
    extent, area = _measure_mask(str(mask_path), _stamp(str(mask_path)), found.box)
    return dataclasses.replace(found, defect_extent=extent, defect_area=area)


def inspect_product(path: Path | str, background_level: int, mask_path: Path | str | None = None) -> Inspection:
    """:func:`inspect_capture` of a capture that must have a product; CaptureError naming the
    file when it has none."""
    found = inspect_capture(path, background_level, mask_path)
    if found.box is None:
        raise CaptureError(path, found.problem or "no product found")
    return found


def product_box(path: Path | str, background_level: int) -> tuple[int, int, int, int]:
    """The product's crop box; CaptureError naming the file when there is none."""
    return inspect_product(path, background_level).box
