"""Importers: turn a public dataset's layout into the capture-folder convention.

Each importer only has to say which images exist, their class and their defect mask
(:class:`ImportItem`); writing the convention, atomically, is shared. A new layout is one
small class registered in :data:`IMPORTERS`.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smh_ml.data.captures import IMAGE_EXTENSIONS, MASK_SUFFIX, CaptureError, class_name, inside
from smh_ml.io import atomic_dir


@dataclass(frozen=True)
class ImportItem:
    label: str
    name: str
    image: Path
    mask: Callable[[], np.ndarray] | None
    """Lazily builds the (H, W) bool defect mask; None when the dataset has none."""


class DatasetImporter(ABC):
    name: str = ""

    @abstractmethod
    def items(self, src: Path, clean_class: str) -> Iterator[ImportItem]:
        """Yield every capture of the dataset at ``src``."""


class MagneticTileImporter(DatasetImporter):
    """Huang et al.'s magnetic tile set: ``MT_<Class>/Imgs/NAME.jpg`` + ``NAME.png`` mask.

    Class ``Free`` becomes the clean class, the others their lower-case names. The masks
    have soft edges (values 0-255), so they are binarised at 128.
    """

    name = "magnetic-tile"
    threshold = 128

    def items(self, src: Path, clean_class: str) -> Iterator[ImportItem]:
        folders = sorted(p for p in src.glob("MT_*") if (p / "Imgs").is_dir())
        if not folders:
            raise CaptureError(src, "no MT_<Class>/Imgs folders: not the magnetic-tile layout")
        for folder in folders:
            cls = folder.name[3:]
            label = clean_class if cls.lower() == "free" else cls.lower()
            for image in sorted((folder / "Imgs").glob("*.jpg")):
                mask_file = image.with_suffix(".png")
                if mask_file.exists() and not inside(mask_file, src):
                    raise CaptureError(mask_file, f"a link that leaves the dataset folder {src}: not read")
                yield ImportItem(label, image.stem, image,
                                 self._mask(mask_file) if mask_file.exists() else None)

    def _mask(self, path: Path) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            array = np.asarray(Image.open(path).convert("L"))
            return array >= self.threshold
        return load


class VocBoxesImporter(DatasetImporter):
    """Pascal-VOC layout: ``JPEGImages/NAME.jpg`` + ``Annotations/NAME.xml`` with boxes (the
    folders also as ``images``/``annotations``, in any case).

    The pair of folders may sit at the top of ``src`` or inside split folders
    (``train/images`` + ``train/annotations``, ``validation/...``), and images may lie in
    sub-folders of the image folder (``images/<class>/NAME.jpg``), as released copies of
    public sets often do: every image folder found under ``src`` is read, each image paired
    with the annotation of its stem beside it. Splits of a release are not kept: the
    pipeline draws its own, grouped by capture.

    An image without objects is clean. An image's class is its objects' class; with several
    classes, the one covering the largest box area. The mask is that class's filled boxes.
    """

    name = "voc"

    IMAGE_FOLDERS = ("jpegimages", "images")
    NOTE_FOLDERS = ("annotations",)

    @staticmethod
    def _child(src: Path, names: tuple[str, ...]) -> Path | None:
        """The first sub-folder of ``src`` whose name is one of ``names``, in any case."""
        found = {p.name.lower(): p for p in src.iterdir() if p.is_dir()}
        return next((found[n] for n in names if n in found), None)

    def _splits(self, src: Path) -> list[tuple[Path, Path]]:
        """(image folder, annotation folder) of ``src`` itself, or else of each folder below it
        that holds an image folder (a release's ``train``, ``validation``, ...)."""
        images_dir = self._child(src, self.IMAGE_FOLDERS)
        if images_dir is not None:
            return [(images_dir, self._child(src, self.NOTE_FOLDERS) or src / "Annotations")]
        splits = []
        for folder in sorted(p for p in src.rglob("*") if p.is_dir() and p.name.lower() in self.IMAGE_FOLDERS):
            if any(part.lower() in self.IMAGE_FOLDERS for part in folder.relative_to(src).parts[:-1]):
                continue  # a sub-folder of an image folder that happens to be named images
            parent = folder.parent
            splits.append((folder, self._child(parent, self.NOTE_FOLDERS) or parent / "Annotations"))
        if not splits:
            raise CaptureError(src, "no JPEGImages (or images) folder, at the top or in split folders: "
                                    "not the VOC layout")
        return splits

    @staticmethod
    def _notes(notes_dir: Path) -> dict[str, Path]:
        """Annotation files by stem, in ``notes_dir`` and its sub-folders."""
        notes: dict[str, Path] = {}
        if not notes_dir.is_dir():
            return notes
        for note in sorted(notes_dir.rglob("*")):
            if note.suffix.lower() != ".xml" or not note.is_file():
                continue
            if note.stem in notes:
                raise CaptureError(note, f"a second annotation for image {note.stem!r} "
                                         f"(the first: {notes[note.stem]}): which one holds is unclear")
            notes[note.stem] = note
        return notes

    def items(self, src: Path, clean_class: str) -> Iterator[ImportItem]:
        splits = self._splits(src)
        names: dict[str, Path] = {}
        for images_dir, notes_dir in splits:
            notes = self._notes(notes_dir)
            for image in sorted(p for p in images_dir.rglob("*")
                                if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir()):
                note = notes.get(image.stem)
                name = image.stem
                if name in names:  # the same stem twice (two splits): named by its folders too
                    name = "-".join(image.relative_to(src).with_suffix("").parts)
                names[name] = image
                boxes = self._boxes(note) if note is not None else []
                if not boxes:
                    yield ImportItem(clean_class, name, image, None)
                    continue
                area = Counter()
                for cls, (x0, y0, x1, y1) in boxes:
                    area[cls] += (x1 - x0) * (y1 - y0)
                label = area.most_common(1)[0][0]
                chosen = [box for cls, box in boxes if cls == label]
                yield ImportItem(label, name, image, self._mask(image, chosen))

    @staticmethod
    def _boxes(note: Path) -> list[tuple[str, tuple[int, int, int, int]]]:
        try:
            root = ET.parse(note).getroot()
        except ET.ParseError as exc:
            raise CaptureError(note, f"annotation is not valid XML: {exc}") from None
        boxes = []
        for obj in root.iter("object"):
            name, box = obj.findtext("name"), obj.find("bndbox")
            if not name or box is None:
                raise CaptureError(note, "object without <name> or <bndbox>")
            try:  # VOC boxes are 1-based and inclusive
                x0, y0, x1, y1 = (int(float(box.findtext(k))) for k in
                                  ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                raise CaptureError(note, "bndbox needs numeric xmin, ymin, xmax, ymax") from None
            x0, x1 = sorted((x0, x1))  # a box drawn right to left or bottom to top
            y0, y1 = sorted((y0, y1))
            boxes.append((name.strip().lower(), (x0 - 1, y0 - 1, x1, y1)))
        return boxes

    @staticmethod
    def _mask(image: Path, boxes: list[tuple[int, int, int, int]]) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            with Image.open(image) as im:
                width, height = im.size
            mask = np.zeros((height, width), dtype=bool)
            for x0, y0, x1, y1 in boxes:
                mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
            return mask
        return load


IMPORTERS: dict[str, DatasetImporter] = {imp.name: imp for imp in
                                         (MagneticTileImporter(), VocBoxesImporter())}


def import_dataset(kind: str, src: Path | str, dest: Path | str, clean_class: str = "defect-free",
                   overwrite: bool = False) -> dict[str, int]:
    """Write dataset ``src`` of layout ``kind`` to ``dest`` in the capture-folder convention.

    Images are copied byte for byte (their content hash is kept); masks are written as
    0/255 PNGs. The set is built in a temporary folder and renamed into place, so a failure
    leaves ``dest`` as it was. Returns the per-class counts.
    """
    if kind not in IMPORTERS:
        raise KeyError(f"unknown dataset layout {kind!r}; known: {', '.join(sorted(IMPORTERS))}")
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise CaptureError(src, "source dataset folder does not exist")
    counts: Counter[str] = Counter()
    with atomic_dir(dest, overwrite=overwrite) as tmp:
        for item in IMPORTERS[kind].items(src, clean_class):
            if not inside(item.image, src):
                raise CaptureError(item.image, f"a link that leaves the dataset folder {src}: not read")
            label = class_name(item.label, item.image)
            folder = tmp / label
            folder.mkdir(exist_ok=True)
            target = folder / f"{item.name}{item.image.suffix.lower()}"
            if target.exists():
                raise CaptureError(item.image, f"two images map to {target.relative_to(tmp)}")
            shutil.copyfile(item.image, target)
            if item.mask is not None:
                mask = item.mask()
                Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{item.name}{MASK_SUFFIX}")
            counts[label] += 1
        if not counts:
            raise CaptureError(src, f"no images found for layout {kind!r}")
    return dict(sorted(counts.items()))

