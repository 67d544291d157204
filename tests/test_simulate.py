import json

import numpy as np
import pytest

from smh_ml.data.captures import load_manifest, read_gray, read_mask
from smh_ml.data.patching import background_bbox
from smh_ml.data.simulate import (
    DEFECT_CLASSES,
    WIDTH_CATEGORIES,
    class_counts,
    simulate_capture,
    simulate_captures,
)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate_captures(a, seed=3, count=30, scale=0.0625)
    simulate_captures(b, seed=3, count=30, scale=0.0625)
    simulate_captures(c, seed=4, count=30, scale=0.0625)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if (c / f).exists())


def test_set_says_it_is_simulated(sim_root):
    meta = json.loads((sim_root / ".simulated.json").read_text())
    assert meta["simulated"] is True and "SIMULATED" in meta["note"]
    assert all(p.name.startswith("sim-") for p in sim_root.rglob("*.jpg"))


def test_class_imbalance_follows_the_paper():
    counts = class_counts(609)
    assert counts == {"defect-free": 240, "imprinted": 51, "pits": 209, "roll-marks": 56,
                      "scratches": 53}
    assert sum(class_counts(120).values()) == 120
    with pytest.raises(ValueError):
        class_counts(10)


@pytest.mark.parametrize("label", DEFECT_CLASSES)
def test_full_size_capture_geometry_and_defect(label):
    capture = simulate_capture(label, np.random.default_rng(7), scale=1.0)
    assert capture.image.shape[0] == 3584 and capture.image.dtype == np.uint8
    top, bottom, left, right = background_bbox(capture.image)
    assert (top, bottom) == (0, 3584)
    assert right - left in WIDTH_CATEGORIES  # the product is one of the six size categories
    fraction = capture.mask.mean()
    assert 0 < fraction < 0.01
    ys, xs = np.nonzero(capture.mask)
    assert xs.min() >= left and xs.max() < right  # defects lie on the product


def test_masks_mark_the_rendered_pixels():
    """Masked pixels stand out from their neighbourhood; unmasked ones do not."""
    from scipy import ndimage

    for label in DEFECT_CLASSES:
        defect = simulate_capture(label, np.random.default_rng(11), scale=0.25)
        image = defect.image.astype(float)
        deviation = np.abs(image - ndimage.median_filter(image, size=15))
        assert deviation[defect.mask].mean() > 3 * deviation[~defect.mask].mean(), label


def test_simulated_set_loads_with_masks(sim_root):
    manifest = load_manifest(sim_root)
    assert manifest["decodes"].all()
    defects = manifest[manifest["label"] != "defect-free"]
    assert defects["mask_path"].notna().all()
    assert (defects["defect_fraction"] > 0).all() and (defects["defect_fraction"] < 0.01).all()
    row = defects.iloc[0]
    assert read_mask(row["mask_path"]).shape == read_gray(row["path"]).shape


def test_refuses_to_overwrite(tmp_path):
    simulate_captures(tmp_path / "s", seed=0, count=30, scale=0.0625)
    with pytest.raises(FileExistsError):
        simulate_captures(tmp_path / "s", seed=1, count=30, scale=0.0625)
