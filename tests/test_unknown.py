"""Unknown defects: the score, its calibration, the verdict in every output, and a class left
out of training flagged on a toy set."""

import json

import numpy as np
import pytest
from PIL import Image

from smh_ml.data.patching import Geometry
from smh_ml.decision import calibrate_unknown, unknown_scores
from smh_ml.deploy.card import ModelCard


def test_the_score_is_defect_probability_spread_over_known_classes():
    clean = np.array([[0.97, 0.01, 0.01, 0.01]])
    known = np.array([[0.97, 0.01, 0.01, 0.01], [0.04, 0.94, 0.01, 0.01]])  # one patch a clear class-1 defect
    spread = np.array([[0.97, 0.01, 0.01, 0.01], [0.10, 0.45, 0.40, 0.05]])  # a defect, but of which kind?
    noisy = np.array([[0.60, 0.15, 0.15, 0.10], [0.04, 0.94, 0.01, 0.01]])  # a fuzzy clean tile beside a defect
    scores = unknown_scores([clean, known, spread, noisy])
    assert scores[0] == pytest.approx(0.01 + 0.01) and scores[1] == pytest.approx(0.02)
    assert scores[2] == pytest.approx(0.45) and scores[2] > 10 * scores[1]
    assert scores[3] == pytest.approx(0.02)  # judged at the most defective patch only
    assert unknown_scores([np.array([[0.2, 0.8]])])[0] == 0.0  # one defect class: nothing to spread over
    # at most 5% of 100 known validation captures reach the calibrated threshold
    val = [np.array([[1 - s, s * 0.9, s * 0.1]]) for s in np.linspace(0, 1, 100)]
    threshold = calibrate_unknown(val, 0.05)
    assert (unknown_scores(val) >= threshold).sum() <= 5


def _json(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def test_the_unknown_threshold_travels_in_the_card():
    card = ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(1, 1, 32), unknown_threshold=0.3)
    back = ModelCard.from_metadata({k: _json(v) for k, v in card.to_metadata().items()})
    assert back.unknown_threshold == 0.3 and "unknown_threshold" not in back.provenance


def _captures(root, per_class=14, side=96, seed=0):
    """Texture captures with a 30-px defect: dark or bright squares (known), or a square half
    dark, half bright (the type left out of training); clean captures beside."""
    rng = np.random.default_rng(seed)
    for label in ("defect-free", "dark", "bright", "twotone"):
        (root / label).mkdir(parents=True)
        for i in range(per_class * (2 if label == "defect-free" else 1)):
            image = np.zeros((side, side), np.uint8)
            image[4:-4, 4:-4] = rng.normal(128, 10, (side - 8, side - 8)).clip(40, 220).astype(np.uint8)
            mask = np.zeros_like(image)
            if label != "defect-free":
                y, x = rng.integers(10, side - 40, 2)
                shade = {"dark": (30, 30), "bright": (230, 230), "twotone": (30, 230)}[label]
                image[y:y + 30, x:x + 15], image[y:y + 30, x + 15:x + 30] = shade
                mask[y:y + 30, x:x + 30] = 255
                Image.fromarray(mask).save(root / label / f"c{i:03d}.mask.png")
            Image.fromarray(image).save(root / label / f"c{i:03d}.png")
    return root


def test_a_class_left_out_of_training_is_flagged_unknown(tmp_path):
    """Trained on clean, dark and bright, a two-tone defect is called one of them with its
    probability split: its held-out captures are flagged far more often than known ones."""
    from smh_ml.config.overrides import apply_settings
    from smh_ml.config.presets import get_profile
    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_patch_set
    from smh_ml.training.budget import candidate_config
    from smh_ml.workflows.unknown import leave_one_out

    profile = apply_settings(get_profile("whole"), [
        "patching.patch=32", "augment.pta_target=40", "augment.max_clean_patches=200", "split.test_fraction=0.3",
        "train.val_fraction=0.3", "train.steps=150", "train.eval_every=50", "train.batch_size=16",
        "train.pretrained=false", "train.flip_average=false"])
    patch_set = build_patch_set(load_manifest(_captures(tmp_path / "caps")), profile)
    result = leave_one_out(patch_set, profile, "twotone", candidate_config(profile.train, "baseline_cnn"), rate=0.1)
    assert result["classes"] == ["defect-free", "bright", "dark"] and result["unknown_captures"] >= 4
    assert result["known_accuracy"] > 0.7  # the model learnt what it was shown (always clean: 50%)
    assert result["auroc"] > 0.75 and result["unknown_flagged"] > result["known_flagged"] + 0.3


def test_predict_gives_the_verdict_beside_the_nearest_known_class(tmp_path):
    from typer.testing import CliRunner

    from smh_ml.cli import app
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build

    image = np.zeros((80, 80), np.uint8)
    image[4:-4, 4:-4] = 128
    Image.fromarray(image).save(tmp_path / "a.png")
    for threshold, verdict in ((0.0, "unknown"), (1.0, None)):
        card = ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(1, 1, 32), unknown_threshold=threshold)
        model = export_onnx(build("baseline_cnn", 3, 32).eval(), tmp_path / f"m{threshold}.onnx", card)
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "a.png"), "--model", str(model), "--json"])
        assert result.exit_code == 0, result.output
        row = json.loads(result.stdout[result.stdout.index("["):])[0]
        assert row["label"] in card.classes and row["verdict"] == (verdict or row["label"])
