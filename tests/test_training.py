import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import toy_set

from smh_ml.config.overrides import with_overrides
from smh_ml.config.presets import get_profile
from smh_ml.config.schema import TrainConfig
from smh_ml.models import build
from smh_ml.training.loop import (
    class_names,
    classification_metrics,
    encode,
    fit,
    fold_indices,
    l2_penalty,
    predict_proba,
    seed_everything,
)


def test_a_tiny_model_learns_a_toy_set():
    x, y = toy_set()
    cfg = TrainConfig(arch="baseline_cnn", epochs=10, batch_size=16, lr=1e-3, l2=1e-4, seed=0)
    seed_everything(0)
    fitted = fit(build("baseline_cnn", 3, 16), x, y, cfg)
    assert fitted.history[-1]["loss"] < fitted.history[0]["loss"]
    x_test, y_test = toy_set(n_per_class=20, seed=1)
    accuracy = (predict_proba(fitted.model, x_test).argmax(1) == y_test).mean()
    assert accuracy > 0.9


def test_training_is_seeded():
    x, y = toy_set(n_per_class=8)
    cfg = TrainConfig(arch="baseline_cnn", epochs=1, batch_size=8, seed=3)
    seed_everything(3)
    a = fit(build("baseline_cnn", 3, 16), x, y, cfg).history
    torch.rand(5)  # whatever happened before, the same seed gives the same run
    seed_everything(3)
    b = fit(build("baseline_cnn", 3, 16), x, y, cfg).history
    assert a == b


def test_l2_penalty_is_the_sum_of_squared_conv_weights():
    model = build("baseline_cnn", 3, 32)
    expected = sum(float(m.weight.pow(2).sum()) for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert float(l2_penalty(model)) == pytest.approx(expected, rel=1e-5)


def test_folds_are_stratified_and_never_split_a_capture():
    index = pd.DataFrame({"capture_id": [f"c{i // 4}" for i in range(80)],
                          "label": ["a"] * 40 + ["b"] * 40, "origin": "real"})
    index.loc[70:, "origin"] = "synthetic"
    y = encode(index["label"], ["a", "b"])
    folds = fold_indices(index, y, 4, seed=0)
    assert len(folds) == 4
    real = (index["origin"] == "real").to_numpy()
    for train_idx, val_idx in folds:  # synthetic patches are their own groups
        train_real, val_real = train_idx[real[train_idx]], val_idx[real[val_idx]]
        assert not set(index["capture_id"][train_real]) & set(index["capture_id"][val_real])
        assert set(y[val_idx]) == {0, 1}
    assert sorted(np.concatenate([v for _, v in folds])) == list(range(80))


def test_metrics_per_class():
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["clean", "a", "b"])
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["a"]["recall"] == pytest.approx(1.0)
    assert metrics["per_class"]["b"]["f1"] == 0.0
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_class_order_puts_the_clean_class_first():
    names = class_names({"pits", "defect-free", "imprinted"}, "defect-free")
    assert names == ["defect-free", "imprinted", "pits"]
    with pytest.raises(ValueError, match="not among the classes"):
        encode(pd.Series(["x"]), ["a"])


@pytest.mark.slow
def test_run_classifier_end_to_end(sim_root, tmp_path):
    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_ota, build_patch_set, build_pta, save_datasets
    from smh_ml.workflows.classifier import ClassifierReport, run_classifier

    profile = with_overrides(get_profile("ci"), {"train": dataclasses.replace(
        get_profile("ci").train, arch="baseline_cnn", epochs=1)})
    patch_set = build_patch_set(load_manifest(sim_root), profile)
    pta, ota = build_pta(patch_set, profile.clean_class, profile.augment), build_ota(patch_set, profile.augment)
    save_datasets(tmp_path / "patches", patch_set, pta, ota)
    report = run_classifier(tmp_path / "patches", tmp_path / "model", profile,
                            severities={"blur": (1.0,), "brightness_up": (2.0,)})
    files = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"model.pt", "model.onnx", "report.json", "confusion_matrix.png", "threshold_curve.png",
            "robustness.png"} <= files
    saved = json.loads((tmp_path / "model" / "report.json").read_text())
    assert saved["test"]["n"] == (patch_set.captures["split"] == "test").sum()
    assert len(saved["cv"]["folds"]) == 2 and "real_only" in saved["cv"]["summary"]
    assert saved["onnx"]["parity_max_abs_diff"] <= 1e-4 and saved["onnx"]["file"] == "model.onnx"
    assert report.classes[0] == "defect-free"
    assert ClassifierReport.load(tmp_path / "model") == report  # one typed report, round-tripped through JSON
    assert set(report.seconds) == {"cv", "fit", "unknown", "test", "export", "quantize", "robustness"}
    assert report.int8["split"] == "validation" and report.bf16["split"] == "validation"
    # model selection and the threshold come from validation captures, never the test captures
    threshold = saved["decision"]["threshold"]
    assert 0 < threshold <= 1 and saved["decision"]["validation_captures"] > 0
    assert saved["test"]["rule"] == "threshold" and "argmax" in saved["test"]
    assert {"auroc", "defect_recall", "false_alarm_rate", "majority_baseline"} <= set(saved["test"]["image"])
    assert saved["fit"]["steps"] == profile.train.steps and saved["fit"]["patches_per_second"] > 0
    assert saved["fit"]["precision"] in ("bf16", "fp32") and "bf16" in saved["hardware"]
    from smh_ml.deploy import Engine

    engine = Engine(tmp_path / "model" / "model.onnx")
    assert engine.threshold == pytest.approx(threshold)
    assert engine.background_level == profile.patching.background_level
    # an export that fails its parity check leaves no model.onnx where predict or the registry look
    import shutil

    from smh_ml.export.onnx import ParityError
    from smh_ml.workflows.classifier import export_stage

    refit = tmp_path / "refit"
    shutil.copytree(tmp_path / "model", refit, ignore=shutil.ignore_patterns("*.onnx"))
    with pytest.raises(ParityError):
        export_stage(refit, patch_set, parity_tol=-1.0)
    assert not list(refit.glob("*onnx*")) and ClassifierReport.load(refit).onnx == report.onnx
    assert Engine(tmp_path / "model" / "model.onnx", threshold=None).threshold is None

    # the pipeline runs the int8 and robustness stages side by side on one report: each writes
    # its section re-reading the report under a lock, so neither loses the other's (each loading
    # at its start and saving at its end lost the int8 section of a real run)
    import multiprocessing

    saved = ClassifierReport.load(tmp_path / "model")
    saved.int8, saved.bf16, saved.robustness = None, None, None
    saved.save(tmp_path / "model")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_stage, args=(kind, str(tmp_path / "model"), str(tmp_path / "patches")))
               for kind in ("int8", "robustness")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    assert [w.exitcode for w in workers] == [0, 0]
    both = ClassifierReport.load(tmp_path / "model")
    assert both.int8 is not None and both.bf16 is not None and len(both.robustness) == 3


def test_recalibrated_batchnorm_holds_the_final_weights_statistics():
    x, y = toy_set(n_per_class=32, size=32)  # 96 patches: three equal batches of 32
    cfg = TrainConfig(arch="inception_cnn", epochs=2, batch_size=32, lr=1e-3, l2=1e-4, seed=0)
    models = {}
    for flag in (False, True):
        seed_everything(0)
        models[flag] = fit(build("inception_cnn", 3, 32), x, y, dataclasses.replace(cfg, recalibrate_bn=flag)).model
    # the same weights: recalibration changes BatchNorm statistics only
    for (name, a), b in zip(models[False].state_dict().items(), models[True].state_dict().values()):
        if "running_" not in name and "num_batches" not in name:
            assert torch.equal(a, b), name
    first_bn = {flag: next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                for flag, model in models.items()}
    seen = []
    handle = first_bn[True].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    predict_proba(models[True], x)
    handle.remove()
    expected = torch.cat(seen).mean(dim=(0, 2, 3))  # what the final weights feed this layer
    torch.testing.assert_close(first_bn[True].running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first_bn[False].running_mean, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_capture_set_without_clean_captures_learns_its_clean_class_from_outside_the_masks(sim_root, tmp_path):
    """Public defect sets often hold defective captures only: validation accepts them when
    every capture has a mask, says what it did, and the image-level test covers the defect
    classes, decided by arg-max (no clean captures to calibrate a threshold on)."""
    import shutil

    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_ota, build_patch_set, build_pta, save_datasets
    from smh_ml.data.validation import NO_CLEAN_RULE, validate_manifest
    from smh_ml.workflows.classifier import run_classifier

    root = tmp_path / "captures"
    shutil.copytree(sim_root, root, ignore=shutil.ignore_patterns("defect-free"))
    profile = with_overrides(get_profile("ci"), {"train": dataclasses.replace(
        get_profile("ci").train, arch="baseline_cnn", steps=20, eval_every=10, cv_folds=0)})
    manifest = load_manifest(root)
    report = validate_manifest(manifest, profile)
    assert report.success, report.format()
    assert any("outside their masks" in note for note in report.notes)
    patch_set = build_patch_set(manifest, profile)
    usable = patch_set.index[patch_set.index["usable"] & (patch_set.index["split"] == "train")]
    assert (usable["label"] == "defect-free").sum() > 0  # clean patches from defect captures
    pta, ota = build_pta(patch_set, profile.clean_class, profile.augment), build_ota(patch_set, profile.augment)
    save_datasets(tmp_path / "patches", patch_set, pta, ota)
    result = run_classifier(tmp_path / "patches", tmp_path / "model", profile, robustness=False)
    assert result.threshold is None and result.test["rule"] != "threshold"
    assert result.test["image"]["clean_images"] == 0 and result.test["n"] > 0
    assert result.classes[0] == "defect-free"
    # a capture without a mask is then refused by name
    unmasked = next(root.glob("pits/*.mask.png"))
    unmasked.unlink()
    refused = validate_manifest(load_manifest(root), profile)
    assert not refused.success
    assert [v.file for v in refused.violations if v.rule == NO_CLEAN_RULE] == [
        str(unmasked).removesuffix(".mask.png") + ".jpg"]



def _stage(kind: str, folder: str, patches: str) -> None:
    """One of the two stages the pipeline runs side by side, in its own process."""
    from smh_ml.config.presets import get_profile
    from smh_ml.data.datasets import load_patch_set
    from smh_ml.workflows.classifier import quantize_stage, robustness_stage

    patch_set = load_patch_set(patches)
    if kind == "int8":
        quantize_stage(folder, patch_set, get_profile("ci").deploy, "defect-free", int8_tolerance=1.0)
    else:
        robustness_stage(folder, patch_set, {"blur": (1.0,), "noise": (5.0,)})
