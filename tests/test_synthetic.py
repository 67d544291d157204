import dataclasses

import numpy as np
import pytest
from torch import nn

from smh_ml.config.presets import get_profile
from smh_ml.data.captures import load_manifest
from smh_ml.data.datasets import build_patch_set
from smh_ml.synthetic.defects import GanData
from smh_ml.synthetic.gan.experiment import load_generator, run_class_gan
from smh_ml.synthetic.pgan import build_pgan, class_patches, read_synthetic


@pytest.mark.slow
def test_class_gan_writes_a_marked_synthetic_set_that_never_meets_test_data(sim_root, tmp_path):
    profile = get_profile("ci")
    # the gate recorded but not enforced: this test is about writing and marking the set
    # (test_recipe.py tests the refusal of a bad GAN's patches)
    # and the CPU profiles' resize up-sampling, which the saved generator must keep when reloaded
    profile = dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, epochs=1, pgan_target=20, gate=False,
                                                                   upsample="resize"))
    patch_set = build_patch_set(load_manifest(sim_root), profile)
    real = class_patches(patch_set, "pits")
    result = run_class_gan(GanData(real, real), "pits", "sdg", tmp_path / "gans" / "sdg", profile)
    folder = tmp_path / "gans" / "sdg" / "pits"
    assert {"generator.pt", "history.json", "scores.json", "samples.png"} <= {p.name for p in folder.iterdir()}
    assert (folder / "synthetic" / "gate.json").is_file() and "gate" in result
    arrays, index = read_synthetic(folder / "synthetic")
    assert len(arrays) == result["synthetic"] == 20 - len(real)
    assert (index["origin"] == "synthetic").all() and (index["gan"] == "sdg").all()
    assert arrays.shape[1:] == (32, 32)
    generator, config = load_generator(folder)
    assert config["upsample"] == "resize" and not any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())
    pgan = build_pgan(patch_set, {"pits": (arrays, index)}, profile.clean_class, profile.augment,
                      profile.gan.pgan_target)
    counts = pgan.index["label"].value_counts()
    assert counts["pits"] == 20
    test_ids = set(patch_set.captures.loc[patch_set.captures["split"] == "test", "capture_id"])
    assert not test_ids & set(pgan.index["capture_id"])
    assert np.array_equal(pgan.arrays[pgan.index["origin"].eq("synthetic").to_numpy()], arrays)


def test_a_class_gan_is_a_step_reused_while_its_inputs_are_unchanged(sim_root, tmp_path):
    from smh_ml.workflows.gans import class_gan

    profile = get_profile("ci")
    profile = dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, epochs=1, pgan_target=20, gate=False))
    patch_set = build_patch_set(load_manifest(sim_root), profile)
    gans = tmp_path / "gans" / "sdg"
    first = class_gan(patch_set, "set-a", "pits", "sdg", gans, profile, {}, {})
    assert not first.reused and first.result["synthetic"] == 20 - len(class_patches(patch_set, "pits"))
    generator = (gans / "pits" / "generator.pt").stat().st_mtime_ns
    again = class_gan(patch_set, "set-a", "pits", "sdg", gans, profile, {}, {})
    assert again.reused and again.result == first.result
    assert (gans / "pits" / "generator.pt").stat().st_mtime_ns == generator
    # another patch set, or asked fresh: trained again
    assert not class_gan(patch_set, "set-b", "pits", "sdg", gans, profile, {}, {}).reused
    assert not class_gan(patch_set, "set-b", "pits", "sdg", gans, profile, {}, {}, fresh=True).reused
