import numpy as np
import pytest

from smh_ml.data.patching import (
    Geometry,
    background_bbox,
    crop_background,
    derive_geometry,
    label_patches,
    mean_aspect,
    patch_defect_stats,
    tile,
    to_patches,
)
from smh_ml.data.simulate import CAPTURE_HEIGHT, WIDTH_CATEGORIES


def _capture(rng, height=400, width=300, left=60, right=200, level=150):
    image = np.clip(rng.normal(6, 3, (height, width)), 0, 255)
    image[:, left:right] = rng.normal(level, 20, (height, right - left))
    return np.clip(image, 0, 255).astype(np.uint8)


def test_crop_background_removes_noisy_margins():
    rng = np.random.default_rng(0)
    image = _capture(rng)
    image[rng.random(image.shape) < 0.01] = 255  # salt noise in the background
    assert background_bbox(image) == (0, 400, 60, 200)
    assert crop_background(image).shape == (400, 140)


def test_crop_background_product_touching_edges():
    rng = np.random.default_rng(1)
    assert crop_background(_capture(rng, left=0, right=300)).shape == (400, 300)
    assert background_bbox(_capture(rng, left=0, right=120)) == (0, 400, 0, 120)
    assert background_bbox(_capture(rng, left=150, right=300)) == (0, 400, 150, 300)


def test_crop_background_keeps_a_dark_defect_band_inside_the_product():
    rng = np.random.default_rng(2)
    image = _capture(rng)
    image[:, 120:122] = 0  # a dark 2-px scratch across the whole height
    assert background_bbox(image)[2:] == (60, 200)


def test_crop_background_all_dark_raises():
    with pytest.raises(ValueError, match="no product found"):
        crop_background(np.full((50, 50), 5, np.uint8))


def test_mean_aspect_is_mean_height_over_mean_width():
    assert mean_aspect([100, 300], [50, 150]) == pytest.approx(200 / 100)
    with pytest.raises(ValueError):
        mean_aspect([], [])


def test_paper_categories_give_the_papers_2048x512_geometry():
    heights = [CAPTURE_HEIGHT] * len(WIDTH_CATEGORIES)
    assert mean_aspect(heights, WIDTH_CATEGORIES) == pytest.approx(3584 / (5220 / 6))
    geometry = derive_geometry(heights, WIDTH_CATEGORIES, patch=256, tiles=16)
    assert (geometry.rows, geometry.cols, geometry.size) == (8, 2, (2048, 512))


def test_square_sets_give_a_square_grid():
    assert derive_geometry([320] * 3, [330] * 3, patch=64, tiles=16) == Geometry(4, 4, 64)


def test_to_patches_paper_defaults_row_major():
    image = np.zeros((2048, 512), np.uint8)
    for r in range(8):
        for c in range(2):
            image[r * 256:(r + 1) * 256, c * 256:(c + 1) * 256] = r * 2 + c
    patches = to_patches(image)
    assert patches.shape == (16, 256, 256)
    assert [int(p[0, 0]) for p in patches] == list(range(16))


def test_to_patches_resizes_first():
    rng = np.random.default_rng(0)
    patches = to_patches(rng.integers(0, 255, (3584, 935), dtype=np.uint8))
    assert patches.shape == (16, 256, 256) and patches.dtype == np.uint8
    with pytest.raises(ValueError):
        to_patches(np.zeros((100, 100), np.uint8), size=(100, 100), patch=64)


def test_patch_defect_stats_counts_mask_pixels_per_tile():
    mask = np.zeros((400, 200), bool)
    mask[10:20, 10:20] = True  # 100 px, all inside tile (0, 0) of a 4x2 grid at 100 px
    fraction, share = patch_defect_stats(mask, Geometry(4, 2, 100))
    assert fraction[0] == pytest.approx(100 / 100 ** 2) and share[0] == pytest.approx(1.0)
    assert np.all(fraction[1:] == 0)


def test_label_patches_rules():
    fraction = np.array([0.0, 0.0001, 0.01, 0.0004])
    share = np.array([0.0, 0.05, 0.55, 0.40])
    labels, usable, _ = label_patches("pits", "clean", fraction, share, 0.002, 0.25)
    assert labels == ["clean", "pits", "pits", "pits"]
    assert usable == [True, False, True, True]
    labels, usable, _ = label_patches("clean", "clean", np.zeros(3), np.zeros(3), 0.002, 0.25)
    assert labels == ["clean"] * 3 and all(usable)


def test_label_patches_keeps_at_least_the_largest_share():
    fraction = np.array([0.0001, 0.0002, 0.0001])
    share = np.array([0.2, 0.6, 0.2])
    labels, usable, _ = label_patches("crack", "clean", fraction, share, 0.01, 0.9)
    assert labels[1] == "crack" and usable == [False, True, False]


def test_tile_shape_mismatch():
    with pytest.raises(ValueError):
        tile(np.zeros((10, 10)), 3)
