"""Defect-centred GAN data, blending and the copy-paste baseline (smh_ml.synthetic)."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from smh_ml.config.presets import get_profile
from smh_ml.data.captures import load_manifest
from smh_ml.data.datasets import build_patch_set
from smh_ml.synthetic.blend import composite, paste
from smh_ml.synthetic.copy_paste import copy_paste
from smh_ml.synthetic.defects import GanData, augment_crops, defect_crops, gan_data

SIDE = 128  # capture side: 16 tiles of 32 px under the ci profile


def _capture_set(root, n=12, seed=0):
    """Grey captures of a textured surface: ``spot`` ones with one dark 6-px square at a known,
    random place (and its mask), ``defect-free`` ones without. Returns the spot centres."""
    rng = np.random.default_rng(seed)
    centres = {}
    for label in ("spot", "defect-free"):
        (root / label).mkdir(parents=True)
        for i in range(n):
            image = np.clip(rng.normal(150, 8, (SIDE, SIDE)), 0, 255)
            name = f"{label}-{i:02d}"
            if label == "spot":
                y, x = (int(v) for v in rng.integers(10, SIDE - 16, 2))
                image[y:y + 6, x:x + 6] = 40
                mask = np.zeros((SIDE, SIDE), np.uint8)
                mask[y:y + 6, x:x + 6] = 255
                Image.fromarray(mask).save(root / label / f"{name}.mask.png")
                centres[name] = (y + 3, x + 3)
            Image.fromarray(image.astype(np.uint8)).save(root / label / f"{name}.png")
    return centres


@pytest.fixture(scope="module")
def spots(tmp_path_factory):
    root = tmp_path_factory.mktemp("spots") / "captures"
    centres = _capture_set(root)
    profile = get_profile("ci")
    profile = dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, source="defects", crop=16),
                                  patching=dataclasses.replace(profile.patching, background_level=0))
    return build_patch_set(load_manifest(root), profile), profile, centres


def test_crops_are_centred_on_each_defect_of_train_captures_only(spots):
    patch_set, profile, _ = spots
    crops, side, captures = defect_crops(patch_set, "spot", profile.gan)
    train = patch_set.captures[(patch_set.captures["split"] == "train") & (patch_set.captures["label"] == "spot")]
    test = patch_set.captures[(patch_set.captures["split"] == "test") & (patch_set.captures["label"] == "spot")]
    assert len(test) and len(crops) == len(train)  # one defect each, none from a test capture
    assert sorted(captures) == sorted(train["capture_id"])
    assert crops.shape[1:] == (2, 16, 16) and side == 12  # 2 x the 6-px extent
    for grey, mask in crops:
        ys, xs = np.nonzero(mask > 127)
        assert abs(ys.mean() - 7.5) <= 1.5 and abs(xs.mean() - 7.5) <= 1.5  # the defect in the middle
        assert grey[mask > 127].mean() < grey[mask <= 127].mean() - 50  # the dark square under its mask


def test_augmented_crops_turn_with_their_masks(spots):
    patch_set, profile, _ = spots
    crops, _, _ = defect_crops(patch_set, "spot", profile.gan)
    grown, sources = augment_crops(crops, 64, profile.augment, seed=1)
    assert len(grown) == len(sources) == 64 and np.array_equal(grown[:len(crops)], crops)
    for (grey, mask), source in zip(grown[len(crops):], sources[len(crops):]):
        assert grey[mask > 127].mean() < grey[mask <= 127].mean() - 40
        assert (mask > 127).sum() == (crops[source, 1] > 127).sum()  # the mask turned with its own crop


def test_a_blended_patch_keeps_its_defect_under_its_mask_inside_the_patch():
    rng = np.random.default_rng(0)
    host = np.clip(rng.normal(150, 5, (32, 32)), 0, 255).astype(np.uint8)
    crop = np.full((8, 8), 150, np.uint8)
    crop[2:6, 2:6] = 30
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    patch, placed = paste(host, crop, mask, 20, 4)
    assert placed.shape == host.shape and set(np.unique(placed)) == {0, 255}
    assert np.array_equal(np.argwhere(placed)[[0, -1]], [[22, 6], [25, 9]])
    assert patch[placed > 0].mean() < host[placed > 0].mean() - 100  # the defect is drawn there
    far = np.ones_like(placed, bool)
    far[19:29, 3:13] = False
    assert np.array_equal(patch[far], host[far])  # and nowhere else
    with pytest.raises(ValueError, match="does not fit"):
        paste(host, crop, mask, 30, 0)


def test_composite_places_one_labelled_defect_per_patch(spots):
    patch_set, profile, _ = spots
    data = gan_data(patch_set, "spot", profile)
    assert data.defects and len(data.hosts) and data.hosts.shape[1:] == (32, 32)
    blended = composite(data.real, data.hosts, data.side, 40, seed=3)
    patches, masks = blended.patches, blended.masks
    assert patches.shape == masks.shape == (40, 32, 32)
    assert len(set(blended.sources)) == min(40, len(data.real))  # the crops in a shuffled cycle
    for patch, mask in zip(patches, masks):
        assert 0 < (mask > 0).sum() < mask.size  # a defect, inside the patch
        assert patch[mask > 0].mean() < patch[mask == 0].mean() - 30


def test_copy_paste_draws_only_on_train_patches_from_train_crops(spots):
    """Every pasted defect comes from a TRAIN capture's crop and lands on a TRAIN clean patch: with
    every test capture's pixels made white, no copy-paste patch holds a white pixel."""
    patch_set, profile, _ = spots
    index, captures = patch_set.index, patch_set.captures
    poisoned = patch_set.patches.copy()
    poisoned[index["split"].eq("test").to_numpy()] = 255
    test_set = dataclasses.replace(patch_set, patches=poisoned)
    data = gan_data(test_set, "spot", profile)
    assert set(captures.loc[captures["split"] == "test", "capture_id"]).isdisjoint(
        captures.loc[(captures["split"] == "train"), "capture_id"])
    blended, sources = copy_paste(data, 50, profile.augment, seed=0)
    patches, masks = blended.patches, blended.masks
    assert len(patches) == 50 and (patches < 250).all()
    assert (masks.reshape(50, -1) > 0).any(axis=1).all()
    train_spots = captures.loc[(captures["split"] == "train") & (captures["label"] == "spot"), "capture_id"]
    assert set(sources) <= set(train_spots)  # each patch names the TRAIN capture its defect came from
    from smh_ml.synthetic.copy_paste import build_copy_paste

    training = build_copy_paste(test_set, profile)
    spot = training.index[training.index["label"] == "spot"]
    assert len(spot) == profile.gan.pgan_target and (spot["origin"] == "synthetic").sum() > 0
    assert (training.arrays < 250).all()  # nothing of a test capture in any patch of the set
    # a validation capture's defect leaves training with it: its pasted copies carry its id
    from smh_ml.training.loop import training_rows

    pasted = spot[spot["origin"] == "synthetic"]
    held = {str(pasted["capture_id"].iloc[0])}
    kept = training.index.iloc[training_rows(training.index, profile.train, held)]
    assert not kept["capture_id"].isin(held).any() and len(kept) < len(training.index)


def test_a_class_without_masks_learns_patches_and_one_whose_defects_fill_the_patch_gets_no_gan(spots, tmp_path):
    from smh_ml.synthetic.gan.experiment import synthesize_class, train_class_gan

    patch_set, profile, _ = spots
    maskless = dataclasses.replace(patch_set, captures=patch_set.captures.assign(mask_path=None))
    data = gan_data(maskless, "spot", profile)
    assert not data.defects and not data.skip and data.real.shape[1:] == (32, 32)
    coarse = dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, crop_margin=6.0))  # 36: all 32 px
    data = gan_data(patch_set, "spot", coarse)
    assert "fill the patch" in data.skip
    result = train_class_gan(data, "spot", "sdg", tmp_path, coarse)
    assert result["skipped"] == data.skip and result["steps"] == 0
    assert not (tmp_path / "spot" / "generator.pt").exists() and (tmp_path / "spot" / "samples.png").is_file()
    outcome = synthesize_class("spot", tmp_path, data, coarse.gan)
    assert outcome["refused"] and outcome["synthetic"] == 0 and outcome["gate"]["reasons"] == [data.skip]


def _blob_crops(n: int, side: int = 16, seed: int = 0) -> np.ndarray:
    """(n, 2, side, side): a dark disc of radius 2-4 px within a pixel of the centre of a noisy
    surface, and its mask: what defect_crops makes of a pit."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    crops = np.empty((n, 2, side, side), np.uint8)
    for i in range(n):
        cy, cx = side / 2 - 0.5 + rng.uniform(-1, 1, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 4) ** 2
        surface = rng.normal(150, 8, (side, side))
        crops[i, 0] = np.clip(np.where(disc, surface - 90, surface), 0, 255)
        crops[i, 1] = disc * 255
    return crops


@pytest.mark.e2e
def test_a_defect_gan_learns_a_centred_blob_within_the_demo_budget(tmp_path):
    """The demo profile's defect GAN (its steps, on 2 cores well under its 2-minute budget) draws
    a dark blob in the middle of its crop, under a mask it draws itself, and its samples pass
    the gate; an untrained generator's do not."""
    from smh_ml.synthetic.gan.experiment import load_generator, synthesize_class, train_class_gan
    from smh_ml.synthetic.gan.training import generate, new_state

    profile = get_profile("demo")
    assert profile.gan.source == "defects"
    crops = _blob_crops(96)
    hosts = np.clip(np.random.default_rng(1).normal(150, 8, (32, 64, 64)), 0, 255).astype(np.uint8)
    data = GanData(crops, hosts[:8], side=12, hosts=hosts)
    result = train_class_gan(data, "pits", "sdg", tmp_path, profile)
    assert result["steps"] == profile.gan.steps and result["source"] == "defects"
    drawn = generate(load_generator(tmp_path / "pits")[0], 64, profile.gan.latent, seed=5)
    untrained = generate(new_state("sdg", 16, profile.gan, channels=2).sampler(), 64, profile.gan.latent, seed=5)

    def blob_like(samples: np.ndarray) -> np.ndarray:
        grey, mask = samples[:, 0].astype(float), samples[:, 1] > 127
        ok = []
        for g, m in zip(grey, mask):
            if not 0.02 <= m.mean() <= 0.5:
                ok.append(False)
                continue
            ys, xs = np.nonzero(m)
            ok.append(abs(ys.mean() - 7.5) <= 3 and abs(xs.mean() - 7.5) <= 3 and g[m].mean() < g[~m].mean() - 30)
        return np.array(ok)

    assert blob_like(crops).all() and blob_like(untrained).mean() < 0.2
    assert blob_like(drawn).mean() >= 0.6, blob_like(drawn).mean()
    outcome = synthesize_class("pits", tmp_path, data, profile.gan)
    assert not outcome["refused"], outcome["gate"]["reasons"]
    assert outcome["synthetic"] == profile.gan.pgan_target - len(data.patches)
    masks = np.load(tmp_path / "pits" / "synthetic" / "masks.npy")
    assert masks.shape == (outcome["synthetic"], 64, 64) and (masks.reshape(len(masks), -1) > 0).any(1).all()
