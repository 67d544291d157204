"""The project's bad-input corpus: every kind of file a camera, an export tool or a careless
user may put where captures belong, each with the outcome all four capture paths (validate,
predict, watch, serving) must agree on.

Made by code, never committed as binaries. An outcome is ``ok`` (decided, no note),
``converted`` (decided, with the note "converted to 8-bit grey from mode ..."; validation
counts it as converted), ``refused`` (an error holding ``words``), ``partial`` (a name that
says the file is still being written: refused with ``words``, and ``watch`` waits for its
rename instead) or ``ignored`` (hidden: no path reads it).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

SIDE = (300, 260)
"""Every decidable kind is a 300 x 260 frame, so a model card may allow 4x that area."""


@dataclass(frozen=True)
class Kind:
    name: str
    """The file name inside the class folder (its extension is part of the kind)."""
    make: Callable[[Path], None]
    outcome: str
    words: str = ""
    """What every refusal of this kind says (validate, predict, watch and serving alike)."""
    by_name: bool = False
    """Its outcome follows from the file name alone: serving, which gets bytes, has no name to
    judge, so such a kind is not sent to it."""


def _grey() -> np.ndarray:
    """A part on a dark background: textured, brighter than the 8-px border."""
    rng = np.random.default_rng(0)
    grey = np.zeros(SIDE, np.uint8)
    grey[8:-8, 8:-8] = rng.normal(128, 12, (SIDE[0] - 16, SIDE[1] - 16)).clip(30, 230).astype(np.uint8)
    return grey


def _colour() -> np.ndarray:
    grey = _grey()
    return np.stack([grey, grey // 2, 255 - grey], -1).astype(np.uint8)


def _save(array_or_image, **kwargs) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        image = array_or_image() if callable(array_or_image) else array_or_image
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image.save(path, **kwargs)
    return make


def _encoded(fmt: str, image: Callable[[], Image.Image], **kwargs) -> bytes:
    buffer = io.BytesIO()
    image().save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _bytes(data: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data())


def _grey_image() -> Image.Image:
    return Image.fromarray(_grey())


def _frame(height: int, width: int, level: int = 128) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        array = np.zeros((height, width), np.uint8)
        array[min(8, height // 4): height - min(8, height // 4), min(8, width // 4): width - min(8, width // 4)] = level
        return array
    return make


def _pages(path: Path) -> None:
    frames = [Image.fromarray(np.full(SIDE, v, np.uint8)) for v in (100, 150)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _bomb(path: Path) -> None:
    """A small PNG declaring 20 MP: over twice the 10 MP limit :func:`bomb_limit` sets."""
    Image.new("L", (4500, 4500), 0).save(path, optimize=True)


BOMB_LIMIT = 10_000_000
"""Pillow's decompression-bomb limit while the corpus runs (``Image.MAX_IMAGE_PIXELS``): small
enough that the bomb stays small on disk and in memory."""


def _icc_jpeg(path: Path) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_grey()).convert("RGB").save(path, icc_profile=profile, quality=95)


def _exif_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated; a capture is decided as the sensor wrote it
    _grey_image().save(path, exif=exif, quality=95)


def _truncated(fmt: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = _encoded(fmt, _grey_image)
        path.write_bytes(data[: len(data) // 2])
    return make


def _html(path: Path) -> None:
    path.write_text("<!doctype html><html><body><img src='capture.png'></body></html>\n")


CORPUS: tuple[Kind, ...] = (
    # decided as they are
    Kind("grey.png", _save(_grey), "ok"),
    Kind("grey.jpg", _save(_grey, quality=95), "ok"),
    Kind("grey.jpeg", _save(_grey, quality=95), "ok"),
    Kind("grey.tif", _save(_grey), "ok"),
    Kind("grey-lzw.tiff", _save(_grey, compression="tiff_lzw"), "ok"),
    Kind("grey.bmp", _save(_grey), "ok"),
    Kind("grey-as-rgb.jpg", _save(lambda: _grey_image().convert("RGB"), quality=95), "ok"),
    Kind("grey-as-rgb.png", _save(lambda: _grey_image().convert("RGB")), "ok"),
    Kind("progressive.jpg", _save(_grey, progressive=True, quality=90), "ok"),
    Kind("icc-profile.jpg", _icc_jpeg, "ok"),
    Kind("exif-rotated.jpg", _exif_jpeg, "ok"),
    Kind("UPPER.JPG", _save(_grey, format="JPEG", quality=95), "ok", by_name=True),
    Kind("défaut-ø.png", _save(_grey), "ok", by_name=True),
    Kind("name with spaces.png", _save(_grey), "ok", by_name=True),
    Kind("jpeg-named.png", _bytes(lambda: _encoded("JPEG", _grey_image, quality=95)), "ok"),
    Kind("png-named.jpg", _bytes(lambda: _encoded("PNG", _grey_image)), "ok"),
    Kind("wide.png", _save(_frame(260, 1000)), "ok"),
    # converted to 8-bit grey, and said
    Kind("colour.jpg", _save(_colour, quality=95), "converted", "mode RGB"),
    Kind("colour.png", _save(_colour), "converted", "mode RGB"),
    Kind("rgba.png", _save(lambda: Image.fromarray(_colour()).convert("RGBA")), "converted", "mode RGBA"),
    Kind("cmyk.jpg", _save(lambda: Image.fromarray(_colour()).convert("CMYK")), "converted", "mode CMYK"),
    Kind("grey-alpha.png", _save(lambda: _grey_image().convert("LA")), "converted", "mode LA"),
    Kind("one-bit.png", _save(lambda: _grey_image().convert("1")), "converted", "mode 1"),
    Kind("one-bit.tif", _save(lambda: _grey_image().convert("1")), "converted", "mode 1"),
    Kind("sixteen.png", _save(lambda: _grey().astype(np.uint16) * 256), "converted", "mode I"),
    Kind("sixteen.tif", _save(lambda: _grey().astype(np.uint16) * 256), "converted", "mode I"),
    Kind("int32.tif", _save(lambda: Image.fromarray(_grey().astype(np.int32) * 1000)), "converted", "mode I"),
    Kind("float.tif", _save(lambda: Image.fromarray(_grey().astype(np.float32) / 255)), "converted", "mode F"),
    Kind("palette.png", _save(lambda: Image.fromarray(_colour()).convert("P", palette=Image.ADAPTIVE)),
         "converted", "mode P"),
    Kind("grey-palette.png", _save(lambda: _grey_image().convert("P")), "converted", "mode P"),
    Kind("palette.bmp", _save(lambda: Image.fromarray(_colour()).convert("P", palette=Image.ADAPTIVE)),
         "converted", "mode P"),
    # refused, with the same words everywhere
    Kind("nan.tif", _save(lambda: Image.fromarray(np.full(SIDE, np.nan, np.float32))), "refused", "NaN"),
    Kind("truncated.jpg", _truncated("JPEG"), "refused", "does not decode"),
    Kind("truncated.png", _truncated("PNG"), "refused", "does not decode"),
    Kind("empty.png", _bytes(lambda: b""), "refused", "0 bytes"),
    Kind("text.png", lambda p: p.write_text("not an image at all\n"), "refused", "not an image"),
    Kind("page.jpg", _html, "refused", "not an image"),
    Kind("random.tif", _bytes(lambda: np.random.default_rng(3).integers(0, 256, 4096, np.uint8).tobytes()),
         "refused", "not an image"),
    Kind("dot.png", _save(np.full((1, 1), 200, np.uint8)), "refused", "too small"),
    Kind("line.png", _save(np.full((1, 300), 200, np.uint8)), "refused", "too small"),
    Kind("tiny.png", _save(np.full((8, 8), 200, np.uint8)), "refused", "too small"),
    Kind("black.png", _save(np.zeros(SIDE, np.uint8)), "refused", "no product"),
    Kind("pages.tiff", _pages, "refused", "frames"),
    Kind("bomb.png", _bomb, "refused", "too large"),
    Kind("tall.png", _save(_frame(20000, 260)), "refused", "20000"),
    Kind("capture.gif", _save(_grey), "refused", "unknown file type"),
    Kind("capture.webp", _save(_grey), "refused", "unknown file type"),
    Kind("gif-named.png", _bytes(lambda: _encoded("GIF", _grey_image)), "refused", "unknown file type"),
    Kind("webp-named.jpg", _bytes(lambda: _encoded("WEBP", _grey_image)), "refused", "unknown file type"),
    Kind("png-named.gif", _bytes(lambda: _encoded("PNG", _grey_image)), "refused", "unknown file type",
         by_name=True),
    Kind("notes.txt", lambda p: p.write_text("operator notes\n"), "refused", "unknown file type", by_name=True),
    Kind("no-extension", _save(_grey, format="PNG"), "refused", "unknown file type", by_name=True),
    # still being written, by their names: refused, and the station waits for the rename
    Kind("writing.png.part", _save(_grey, format="PNG"), "partial", "still being written", by_name=True),
    Kind("writing.tmp", _save(_grey, format="PNG"), "partial", "still being written", by_name=True),
    Kind("backup.png~", _save(_grey, format="PNG"), "partial", "still being written", by_name=True),
    Kind("download.crdownload", _save(_grey, format="PNG"), "partial", "still being written", by_name=True),
    # hidden: not a capture anywhere (a camera's or an editor's own file)
    Kind(".hidden.png", _save(_grey), "ignored", by_name=True),
)


def write_corpus(folder: Path) -> dict[str, Kind]:
    """Every kind as a file in ``folder`` (made here), by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in CORPUS:
        kind.make(folder / kind.name)
    return {kind.name: kind for kind in CORPUS}


def by_outcome(outcome: str, kinds=CORPUS) -> set[str]:
    return {kind.name for kind in kinds if kind.outcome == outcome}
