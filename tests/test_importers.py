import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import MAGNETIC_TILE
from PIL import Image

from smh_ml.data.captures import CaptureError, load_manifest, read_mask
from smh_ml.data.importers import import_dataset

pytestmark = pytest.mark.real_data


def test_magnetic_tile_import_counts_and_bytes(mt_root):
    counts = {p.name: len(list(p.glob("*.jpg"))) for p in mt_root.iterdir()}
    assert counts == {"blowhole": 115, "break": 85, "crack": 57, "defect-free": 952, "fray": 32,
                      "uneven": 103}
    src = MAGNETIC_TILE / "MT_Crack" / "Imgs"
    name = sorted(src.glob("*.jpg"))[0]
    copied = mt_root / "crack" / name.name
    assert hashlib.sha256(copied.read_bytes()).digest() == hashlib.sha256(name.read_bytes()).digest()
    mask = np.asarray(Image.open(mt_root / "crack" / f"{name.stem}.mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    original = np.asarray(Image.open(name.with_suffix(".png")).convert("L"))
    assert np.array_equal(mask > 0, original >= 128)


def test_magnetic_tile_manifest(mt_root):
    manifest = load_manifest(mt_root)
    assert len(manifest) == 1344 and manifest["decodes"].all()
    assert (manifest["mask_height"] == manifest["height"]).all()
    assert manifest.loc[manifest["label"] == "defect-free", "defect_fraction"].max() == 0
    assert manifest.loc[manifest["label"] == "blowhole", "defect_fraction"].median() < 0.01


def test_import_is_atomic_and_refuses_to_overwrite(mt_root, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        import_dataset("magnetic-tile", MAGNETIC_TILE, mt_root)
    bad = tmp_path / "not-mt"
    bad.mkdir()
    dest = tmp_path / "dest"
    with pytest.raises(CaptureError, match="not the magnetic-tile layout"):
        import_dataset("magnetic-tile", bad, dest)
    assert not dest.exists() and not list(tmp_path.glob(".dest.*"))


def _voc(tmp_path):
    src = tmp_path / "voc"
    (src / "JPEGImages").mkdir(parents=True)
    (src / "Annotations").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        image = rng.integers(50, 200, (60, 80), dtype=np.uint8)
        Image.fromarray(image).save(src / "JPEGImages" / f"{name}.jpg")
    box = ("<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin>"
           "<xmax>{}</xmax><ymax>{}</ymax></bndbox></object>")
    boxes = box.format("Scratch", 11, 21, 30, 25) + box.format("pit", 1, 1, 3, 3)
    (src / "Annotations" / "a.xml").write_text(f"<annotation>{boxes}</annotation>")
    (src / "Annotations" / "b.xml").write_text("<annotation></annotation>")
    return src


@pytest.mark.filterwarnings("ignore")
def test_voc_boxes_importer(tmp_path):
    dest = tmp_path / "captures"
    counts = import_dataset("voc", _voc(tmp_path), dest)
    assert counts == {"defect-free": 2, "scratch": 1}
    mask = read_mask(dest / "scratch" / "a.mask.png")
    assert mask.shape == (60, 80) and mask.sum() == 20 * 5 and mask[20:25, 10:30].all()
    (tmp_path / "voc" / "Annotations" / "c.xml").write_text("<annotation><object>")
    with pytest.raises(CaptureError, match="c.xml: annotation is not valid XML"):
        import_dataset("voc", tmp_path / "voc", tmp_path / "other")


def test_unknown_layout():
    with pytest.raises(KeyError, match="known: magnetic-tile, voc"):
        import_dataset("coco", ".", "x")


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("images, notes", [("images", "annotations"), ("jpegimages", "ANNOTATIONS")])
def test_voc_folder_name_variants(tmp_path, images, notes):
    src = _voc(tmp_path)
    (src / "JPEGImages").rename(src / images)
    (src / "Annotations").rename(src / notes)
    assert import_dataset("voc", src, tmp_path / "captures") == {"defect-free": 2, "scratch": 1}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute", "a/b", "..", "dents?"])
def test_a_hostile_class_name_is_refused_by_name_and_writes_nothing_outside(tmp_path, name):
    src = _voc(tmp_path)
    box = (f"<object><name>{name}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
           "</bndbox></object>")
    (src / "Annotations" / "c.xml").write_text(f"<annotation>{box}</annotation>")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CaptureError, match=r"c.jpg: class name .* is not a plain name"):
        import_dataset("voc", src, tmp_path / "dest" / "captures")
    assert sorted(p for p in tmp_path.rglob("*") if p.name != "dest") == before  # nothing written
    assert not Path("/tmp/absolute").exists()


def test_a_class_name_with_spaces_and_capitals_becomes_a_folder_name(tmp_path):
    src = _voc(tmp_path)
    box = ("<object><name> Roll Marks </name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
           "</bndbox></object>")
    (src / "Annotations" / "c.xml").write_text(f"<annotation>{box}</annotation>")
    counts = import_dataset("voc", src, tmp_path / "captures")
    assert counts["roll-marks"] == 1


def test_links_out_of_the_dataset_are_refused_not_copied(tmp_path):
    src = _voc(tmp_path)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((src / "JPEGImages" / "a.jpg").read_bytes())
    (src / "JPEGImages" / "link.jpg").symlink_to(secret)
    with pytest.raises(CaptureError, match="link.jpg: a link that leaves the dataset folder"):
        import_dataset("voc", src, tmp_path / "captures")
    assert not (tmp_path / "captures").exists()


def _box(name, x0, y0, x1, y1):
    return (f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


@pytest.mark.filterwarnings("ignore")
def test_voc_in_split_folders_with_class_sub_folders(tmp_path):
    """A release laid out as train/ and validation/, each with images/<class>/ and
    annotations/: every image is read, paired with its own note, the splits merged."""
    src = tmp_path / "release"
    rng = np.random.default_rng(1)
    layout = {"train": [("crazing", "crazing_1"), ("crazing", "crazing_2"), ("inclusion", "inclusion_1")],
              "validation": [("crazing", "crazing_3"), ("inclusion", "inclusion_2")]}
    for split, images in layout.items():
        (src / split / "annotations").mkdir(parents=True)
        for cls, stem in images:
            folder = src / split / "images" / cls
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(folder / f"{stem}.jpg")
            # one box drawn right to left: its corners are put in order, not dropped
            box = _box(cls, 30, 5, 10, 20) if stem == "crazing_2" else _box(cls, 3, 3, 12, 8)
            (src / split / "annotations" / f"{stem}.xml").write_text(f"<annotation>{box}</annotation>")
    dest = tmp_path / "captures"
    assert import_dataset("voc", src, dest) == {"crazing": 3, "inclusion": 2}
    assert read_mask(dest / "crazing" / "crazing_2.mask.png")[4:20, 9:30].all()
    assert read_mask(dest / "inclusion" / "inclusion_2.mask.png").sum() == 10 * 6


@pytest.mark.filterwarnings("ignore")
def test_voc_splits_with_the_same_image_name_keep_both_and_an_ambiguous_note_is_refused(tmp_path):
    src = tmp_path / "release"
    for split in ("train", "test"):
        (src / split / "JPEGImages").mkdir(parents=True)
        (src / split / "Annotations").mkdir()
        Image.fromarray(np.full((30, 30), 90, np.uint8)).save(src / split / "JPEGImages" / "0001.jpg")
        (src / split / "Annotations" / "0001.xml").write_text(f"<annotation>{_box('dent', 2, 2, 9, 9)}</annotation>")
    dest = tmp_path / "captures"
    assert import_dataset("voc", src, dest) == {"dent": 2}
    assert sorted(p.name for p in (dest / "dent").glob("*.jpg")) == ["0001.jpg", "train-JPEGImages-0001.jpg"]
    (src / "train" / "Annotations" / "more").mkdir()
    (src / "train" / "Annotations" / "more" / "0001.xml").write_text("<annotation></annotation>")
    with pytest.raises(CaptureError, match=r"0001.xml: a second annotation for image '0001'"):
        import_dataset("voc", src, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_folder_without_any_image_folder_names_the_layout(tmp_path):
    (tmp_path / "src" / "train" / "pictures").mkdir(parents=True)
    with pytest.raises(CaptureError, match="no JPEGImages .* in split folders: not the VOC layout"):
        import_dataset("voc", tmp_path / "src", tmp_path / "dest")
