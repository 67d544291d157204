"""Capture sets: the folder convention, image reading and the capture manifest.

A capture set is ``<root>/<class>/<name>.<png|jpg|jpeg|tif|tiff|bmp>`` with an optional
mask beside each image, ``<name>.mask.png`` (nonzero = defect). Class folder names are the
labels; any number of classes is allowed. Nothing here moves, rewrites or deletes a file:
problems are recorded per file in the manifest and reported by :mod:`smh_ml.data.validation`.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from smh_ml.data.patching import background_bbox
from smh_ml.io import file_hash

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIX = ".mask.png"

MANIFEST_COLUMNS = [
    "capture_id", "path", "label", "height", "width", "mode", "channels", "bit_depth",
    "decodes", "error", "mask_path", "mask_height", "mask_width", "mask_error",
    "defect_fraction", "content_hash",
]


class CaptureError(ValueError):
    """A capture or mask file that cannot be used, with the file and the problem."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class ImageInfo:
    height: int
    width: int
    mode: str
    channels: int
    bit_depth: int


_MODE_INFO = {  # PIL mode -> (channels, bits per channel)
    # a palette image holds indices into a colour table, not grey levels: 3 channels, converted or refused
    "1": (1, 1), "L": (1, 8), "P": (3, 8), "LA": (2, 8), "RGB": (3, 8), "RGBA": (4, 8),
    "CMYK": (4, 8), "YCbCr": (3, 8), "I;16": (1, 16), "I;16B": (1, 16), "I;16L": (1, 16),
    "I": (1, 32), "F": (1, 32),
}


CLASS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
"""A class name is one plain path component: lower-case letters, digits, '-' and '_'."""


def class_name(raw: str, source: Path | str) -> str:
    """``raw`` as a class folder name: trimmed, lower-cased, spaces to '-'. Anything that is
    still not one plain path component (a separator, '..', an absolute path, other
    characters) is refused with a CaptureError naming ``source``: a dataset's label never
    chooses where files are written."""
    name = re.sub(r"\s+", "-", str(raw).strip().lower())
    if not CLASS_NAME.match(name):
        raise CaptureError(source, f"class name {raw!r} is not a plain name (letters, digits, '-' and '_'; "
                                   "no path separators, no '..')")
    return name


def inside(path: Path | str, root: Path | str) -> bool:
    """Whether ``path``, links resolved, stays within ``root`` (links out of it are refused)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def is_mask_file(path: Path) -> bool:
    return path.name.lower().endswith(MASK_SUFFIX)


PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".swp")
"""Names of files still being written (a camera or copy tool renames them when done)."""


def is_partial_name(path: Path | str) -> bool:
    """A name that says the file is still being written (:data:`PARTIAL_SUFFIXES`, or a
    trailing ``~``): ``watch`` waits for its rename, validate and predict refuse it."""
    name = Path(path).name
    return name.endswith("~") or Path(name).suffix.lower() in PARTIAL_SUFFIXES


def file_type_problem(path: Path | str) -> str | None:
    """Why ``path`` is not a capture by its name (None: it may be one): the rule validation's
    folder scan and ``predict`` apply alike, so a GIF or WebP is refused by both with these
    words instead of decided by one and refused by the other."""
    if is_partial_name(path):
        return "still being written (a partial file's name); decide it once it is renamed into place"
    suffix = Path(path).suffix
    if suffix.lower() in IMAGE_EXTENSIONS:
        return None
    return (f"unknown file type {suffix or '(no extension)'}; expected one of {', '.join(IMAGE_EXTENSIONS)} "
            f"or *{MASK_SUFFIX}")


def mask_path_for(image_path: Path) -> Path:
    return image_path.with_name(image_path.stem + MASK_SUFFIX)


CAPTURE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF", "BMP": "BMP"}
"""Pillow's names of the formats a capture may be stored in (a camera's JPEG with several
pictures opens as MPO): what the extensions of IMAGE_EXTENSIONS promise, judged by content,
so bytes without a name (a REST request) and a GIF renamed ``.png`` meet the file-name rule."""


def open_image(source: Path | str | bytes, name: Path | str | None = None,
               max_pixels: int | None = None) -> Image.Image:
    """Open and decode a capture from a file or from bytes (a REST request), every failure a
    CaptureError naming ``name`` (default: the path): a missing or empty file, content no
    decoder knows or a format that is not a capture's (GIF, WebP: :data:`CAPTURE_FORMATS`),
    a truncated file, more pixels than Pillow's decompression-bomb limit or than
    ``max_pixels`` (read from the header, before anything is decoded), or several frames (a
    capture is one image). Validation, patches, predict and serving all read
    through here, so they refuse the same files with the same message."""
    name = name if name is not None else (source if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        if not source:
            raise CaptureError(name, "empty file (0 bytes)")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise CaptureError(name, "file does not exist")
        if path.stat().st_size == 0:
            raise CaptureError(name, "empty file (0 bytes)")
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            if image.format not in CAPTURE_FORMATS:
                raise CaptureError(name, f"unknown file type {image.format} (by its content); expected one of "
                                         f"{', '.join(sorted(set(CAPTURE_FORMATS.values())))}")
            pixels = image.size[0] * image.size[1]
            if max_pixels is not None and pixels > max_pixels:
                raise CaptureError(name, f"too large: {image.size[0]} x {image.size[1]} px is more than the "
                                         f"{max_pixels:,} px this model accepts (refused before decoding)")
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise CaptureError(name, f"{frames} frames: a capture is a single image")
            image.load()  # a truncated file fails here, not at open()
    except CaptureError:
        raise
    except UnidentifiedImageError:
        raise CaptureError(name, "not an image (no decoder recognises its content)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CaptureError(name, f"too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CaptureError(name, f"image does not decode: {exc}") from None
    return image


MIN_CAPTURE_SIDE = 16
"""A capture smaller than this on a side cannot be a part's image."""


def capture_problem(image: np.ndarray, background_level: int) -> str | None:
    """Why a decoded grey capture cannot be decided (None: it can): too small, or no product
    brighter than the background. The one rule validation and the inference engine share."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_CAPTURE_SIDE:
        return f"too small: {height}x{width} pixels, under {MIN_CAPTURE_SIDE} on a side"
    try:
        background_bbox(image, background_level)
    except ValueError as exc:
        return str(exc)
    return None


GREY_RGB_MODE = "RGB (grey)"
"""The manifest's mode of an RGB file whose three channels are equal: read as grey."""
GREY_RGB_TOLERANCE = 2
"""Largest difference between an RGB file's channels (grey levels) for it to count as grey
stored as RGB: JPEG's colour conversion leaves +-1 on grey content."""


def grey_of_rgb(image: Image.Image) -> np.ndarray | None:
    """The grey levels of an RGB image whose channels agree within GREY_RGB_TOLERANCE (the
    channels' mean), else None: public defect sets often store greyscale as 3-channel JPEG."""
    if image.mode != "RGB":
        return None
    array = np.asarray(image, dtype=np.int16)
    spread = max(np.abs(array[..., 0] - array[..., 1]).max(initial=0),
                 np.abs(array[..., 1] - array[..., 2]).max(initial=0))
    if spread > GREY_RGB_TOLERANCE:
        return None
    return np.rint(array.mean(axis=2)).astype(np.uint8)


def probe_image(path: Path) -> ImageInfo:
    """Decode ``path`` fully and describe it; raises CaptureError when it does not decode.
    Grey stored as RGB is described as one 8-bit channel, mode ``RGB (grey)``."""
    image = open_image(path)
    if grey_of_rgb(image) is not None:
        return ImageInfo(image.height, image.width, GREY_RGB_MODE, 1, 8)
    channels, bits = _MODE_INFO.get(image.mode, (len(image.getbands()), 8))
    return ImageInfo(image.height, image.width, image.mode, channels, bits)


def to_gray8(image: Image.Image, path: Path | str, convert: bool) -> np.ndarray:
    """An 8-bit single-channel array; grey stored as RGB is read as grey; other modes only
    when ``convert`` (else CaptureError)."""
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    grey = grey_of_rgb(image)
    if grey is not None:
        return grey
    if not convert:
        channels, bits = _MODE_INFO.get(image.mode, (len(image.getbands()), 8))
        raise CaptureError(
            path,
            f"not 8-bit single-channel (mode {image.mode}: {channels} channel(s), {bits}-bit); "
            "convert it to 8-bit greyscale or enable validation.convert_color",
        )
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        return np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if not np.isfinite(array).all():
            raise CaptureError(path, f"{int((~np.isfinite(array)).sum())} pixel(s) are NaN or infinite")
        return np.clip(array / max(float(array.max()), 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def read_gray(path: Path | str, convert: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Read a capture as an (H, W) uint8 array."""
    return to_gray8(open_image(path, max_pixels=max_pixels), path, convert)


def read_gray_noted(source: Path | str | bytes, name: Path | str | None = None,
                    max_pixels: int | None = None) -> tuple[np.ndarray, str | None]:
    """A capture as (H, W) uint8, converted from any mode Pillow reads, with a note saying so
    when it was converted (None for 8-bit grey, stored as such or as equal RGB channels):
    predict, watch and serving say what validation counts as "converted to 8-bit grey"."""
    name = name if name is not None else source
    with open_image(source, name, max_pixels) as image:
        mode = image.mode
        grey = image.mode == "L" or grey_of_rgb(image) is not None
        array = to_gray8(image, name, convert=True)
    return array, None if grey else f"converted to 8-bit grey from mode {mode}"


def read_mask(path: Path | str) -> np.ndarray:
    """Read a mask as an (H, W) bool array, nonzero = defect."""
    image = open_image(path)
    array = np.asarray(image)
    if array.ndim == 3:
        array = array.max(axis=2)
    return array != 0


@dataclass(frozen=True)
class CaptureFile:
    label: str
    path: Path
    mask_path: Path | None


@dataclass(frozen=True)
class LayoutProblem:
    path: Path
    problem: str


def scan_capture_root(root: Path | str) -> tuple[list[CaptureFile], list[LayoutProblem]]:
    """Find captures under ``root`` by the folder convention.

    Returns the captures and every file that breaks the convention (files directly in the
    root, unknown extensions, masks without an image, nested folders, links that lead out of
    the root: never read). Hidden files are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise CaptureError(root, "capture root is not a directory")
    captures: list[CaptureFile] = []
    problems: list[LayoutProblem] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not inside(entry, root):
            problems.append(LayoutProblem(entry, "a link that leaves the capture root: not read"))
            continue
        if not entry.is_dir():
            problems.append(LayoutProblem(entry, "file directly in the capture root; "
                                                 "captures belong in <root>/<class>/"))
            continue
        files = {p.name: p for p in sorted(entry.iterdir()) if not p.name.startswith(".")}
        for name, path in files.items():
            if not inside(path, root):
                problems.append(LayoutProblem(path, "a link that leaves the capture root: not read"))
            elif path.is_dir():
                problems.append(LayoutProblem(path, "nested folder inside a class folder"))
            elif is_mask_file(path):
                image_names = [name[: -len(MASK_SUFFIX)] + ext for ext in IMAGE_EXTENSIONS]
                if not any(n in files or n.upper() in files for n in image_names):
                    problems.append(LayoutProblem(path, "mask without a matching image"))
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                mask = mask_path_for(path)
                captures.append(CaptureFile(entry.name, path, mask if mask.exists() else None))
            else:
                problems.append(LayoutProblem(path, file_type_problem(path)))
    return captures, problems


def _describe(capture: CaptureFile, root: Path) -> dict:
    row: dict = {
        "capture_id": f"{capture.label}/{capture.path.name}",
        "path": str(capture.path),
        "label": capture.label,
        "height": pd.NA, "width": pd.NA, "mode": None, "channels": pd.NA, "bit_depth": pd.NA,
        "decodes": False, "error": None,
        "mask_path": str(capture.mask_path) if capture.mask_path else None,
        "mask_height": pd.NA, "mask_width": pd.NA, "mask_error": None,
        "defect_fraction": float("nan"),
        "content_hash": file_hash(capture.path) if capture.path.stat().st_size else None,
    }
    try:
        info = probe_image(capture.path)
        row.update(height=info.height, width=info.width, mode=info.mode,
                   channels=info.channels, bit_depth=info.bit_depth, decodes=True)
    except CaptureError as exc:
        row["error"] = exc.problem
    if capture.mask_path is not None:
        try:
            mask = read_mask(capture.mask_path)
            row.update(mask_height=mask.shape[0], mask_width=mask.shape[1],
                       defect_fraction=float(mask.mean()))
        except CaptureError as exc:
            row["mask_error"] = exc.problem
    return row


def load_manifest(root: Path | str) -> pd.DataFrame:
    """Load a capture set into a manifest DataFrame, one row per capture.

    Every file is decoded once, so the manifest says which files decode, their geometry and
    mode, the mask geometry and defect fraction, and the content hash (sha256 of the bytes).
    Layout problems are kept in ``df.attrs["layout_problems"]`` as (path, problem) pairs.
    """
    root = Path(root)
    captures, problems = scan_capture_root(root)
    rows = [_describe(capture, root) for capture in captures]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    for column in ("height", "width", "channels", "bit_depth", "mask_height", "mask_width"):
        manifest[column] = manifest[column].astype("Int64")
    manifest["decodes"] = manifest["decodes"].astype(bool)
    manifest.attrs["root"] = str(root)
    manifest.attrs["class_folders"] = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    manifest.attrs["layout_problems"] = [(str(p.path), p.problem) for p in problems]
    return manifest


def class_counts(manifest: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in manifest["label"].value_counts().sort_index().items()}


def save_manifest(manifest: pd.DataFrame, path: Path | str) -> Path:
    """Write the manifest as CSV plus a JSON sidecar for its attrs, both atomically."""
    import json

    from smh_ml.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path.with_suffix(".json"), json.dumps(manifest.attrs, indent=1) + "\n")
    return atomic_write_text(path, manifest.to_csv(index=False))


def read_manifest(path: Path | str) -> pd.DataFrame:
    import json

    path = Path(path)
    manifest = pd.read_csv(path)
    for column in ("height", "width", "channels", "bit_depth", "mask_height", "mask_width"):
        manifest[column] = manifest[column].astype("Int64")
    sidecar = path.with_suffix(".json")
    if sidecar.exists():
        manifest.attrs.update(json.loads(sidecar.read_text()))
    return manifest
