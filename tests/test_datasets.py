import numpy as np
import pandas as pd
import pytest

from smh_ml.config.presets import get_profile
from smh_ml.data.augment import augment_to_count
from smh_ml.data.captures import load_manifest
from smh_ml.data.datasets import (
    build_ota,
    build_patch_set,
    build_pta,
    load_patch_set,
    load_training_set,
    save_datasets,
)
from smh_ml.data.splits import split_by_capture
from smh_ml.data.validation import validate_patch_sets


@pytest.fixture(scope="module")
def sim_sets(sim_root):
    profile = get_profile("ci")
    patch_set = build_patch_set(load_manifest(sim_root), profile)
    pta, ota = build_pta(patch_set, profile.clean_class, profile.augment), build_ota(patch_set, profile.augment)
    return profile, patch_set, pta, ota


def test_split_is_by_capture_stratified_and_keeps_duplicates_together():
    manifest = pd.DataFrame({"label": ["a"] * 10 + ["b"] * 3,
                             "content_hash": [f"h{i}" for i in range(12)] + ["h0"],
                             "path": [f"p{i}" for i in range(13)]})
    manifest.loc[12, "label"] = "a"
    split = split_by_capture(manifest, 0.2, seed=1)
    assert split[manifest["content_hash"] == "h0"].nunique() == 1
    for label in ("a", "b"):
        assert set(split[manifest["label"] == label]) == {"train", "test"}
    assert split_by_capture(manifest, 0.2, seed=1).equals(split)


def test_patch_set_geometry_and_labels(sim_sets):
    profile, patch_set, pta, ota = sim_sets
    g = patch_set.geometry
    assert (g.rows, g.cols, g.patch) == (8, 2, 32)  # the paper's 4:1 grid, at 32 px
    assert patch_set.patches.shape == (len(patch_set.captures) * 16, 32, 32)
    index = patch_set.index
    defect_rows = index[(index["capture_label"] != "defect-free") & index["usable"]]
    assert set(defect_rows["label"]) >= {"imprinted", "pits", "roll-marks", "scratches", "defect-free"}
    assert (index.loc[index["label"] == "defect-free", "defect_fraction"] == 0).all()
    # every defect capture keeps at least one defect patch
    per_capture = defect_rows[defect_rows["label"] != "defect-free"].groupby("capture_id").size()
    assert len(per_capture) == (patch_set.captures["label"] != "defect-free").sum()


def test_no_test_capture_reaches_a_training_set(sim_sets):
    profile, patch_set, pta, ota = sim_sets
    test_ids = set(patch_set.captures.loc[patch_set.captures["split"] == "test", "capture_id"])
    assert test_ids and not test_ids & set(pta.index["capture_id"])
    assert not test_ids & set(ota.index["capture_id"])
    assert validate_patch_sets(patch_set, {"pta": pta, "ota": ota}, "defect-free").success


def test_leak_is_caught_by_the_patch_suite(sim_sets):
    profile, patch_set, pta, ota = sim_sets
    test_id = patch_set.captures.loc[patch_set.captures["split"] == "test", "capture_id"].iloc[0]
    leaky = type(pta)(pta.arrays, pta.index.assign(capture_id=[test_id] + list(pta.index["capture_id"][1:])))
    report = validate_patch_sets(patch_set, {"pta": leaky}, "defect-free")
    assert not report.success and any("TRAIN captures" in v.rule and test_id in v.file
                                      for v in report.violations)


def test_pta_and_ota_targets(sim_sets):
    profile, patch_set, pta, ota = sim_sets
    counts = pta.index["label"].value_counts()
    assert counts["defect-free"] == profile.augment.max_clean_patches
    for label in ("imprinted", "pits", "roll-marks", "scratches"):
        assert counts[label] == profile.augment.pta_target
        assert (pta.index[pta.index["label"] == label]["origin"] == "real").sum() < counts[label]
    assert (ota.index["label"].value_counts() == profile.augment.ota_target).all()
    assert ota.arrays.shape[1:] == profile.augment.ota_size


def test_augmentation_is_flips_and_light_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 16, 16), dtype=np.uint8)
    extra, sources = augment_to_count(images, 12, brightness=0.2, contrast=0.2, seed=5)
    assert extra.shape == (9, 16, 16) and sorted(set(sources)) == [0, 1, 2]
    again, _ = augment_to_count(images, 12, brightness=0.2, contrast=0.2, seed=5)
    assert np.array_equal(extra, again)
    for out, src in zip(extra, sources):
        base = images[src].astype(float)
        variants = [base, base[:, ::-1], base[::-1], base[::-1, ::-1]]
        # brightness/contrast are monotone: the rank order of a flipped source survives
        corr = max(pd.Series(v.ravel()).corr(pd.Series(out.astype(float).ravel()), method="spearman")
                   for v in variants)
        assert corr > 0.98
    assert augment_to_count(images, 2, 0.2, 0.2)[0].shape == (0, 16, 16)


def test_save_and_load_round_trip(sim_sets, tmp_path):
    profile, patch_set, pta, ota = sim_sets
    stats = save_datasets(tmp_path / "out", patch_set, pta, ota)
    loaded = load_patch_set(tmp_path / "out")
    assert loaded.geometry == patch_set.geometry
    assert np.array_equal(loaded.patches, patch_set.patches)
    assert len(load_training_set(tmp_path / "out", "pta").arrays) == sum(stats["pta"].values())


@pytest.mark.real_data
def test_magnetic_tile_patches_demo_profile(mt_root):
    profile = get_profile("demo")
    patch_set = build_patch_set(load_manifest(mt_root), profile)
    assert (patch_set.geometry.rows, patch_set.geometry.cols) == (8, 8)  # 64 tiles, mean aspect 0.97
    usable = patch_set.index[patch_set.index["usable"]]
    counts = usable.groupby(["split", "label"]).size()
    for label in ("blowhole", "break", "crack", "fray", "uneven"):
        assert counts[("train", label)] > 0 and counts[("test", label)] > 0
    assert len(patch_set.captures[patch_set.captures["split"] == "test"]) == pytest.approx(0.2 * 1344, abs=3)
