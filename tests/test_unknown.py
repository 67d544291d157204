"""Unknown defects: the score, its calibration, the verdict in every output, and a class left
out of training flagged on a toy set."""

import json

import numpy as np
import pytest
from PIL import Image

from smh_ml.data.patching import Geometry
from smh_ml.decision import calibrate_unknown, unknown_scores
from smh_ml.deploy.card import ModelCard


def test_the_score_is_a_captures_largest_patch_distance_and_its_threshold_flags_the_rate():
    scores = unknown_scores([np.array([0.5, 3.0, 1.0]), np.array([2.0]), np.array([])])
    assert scores.tolist() == [3.0, 2.0, 0.0]
    # at most 5% of 100 known validation captures reach the calibrated threshold (no ceiling of 1)
    val = [np.array([s, s / 2]) for s in np.linspace(0, 200, 100)]
    threshold = calibrate_unknown(val, 0.05)
    assert threshold > 180 and (unknown_scores(val) >= threshold).sum() <= 5


@pytest.mark.parametrize("arch,flips,width", [("baseline_cnn", False, 2048), ("baseline_cnn", True, 64),
                                              ("efficientnet_lite0", False, 1280)])
def test_the_feature_distance_keeps_the_classifiers_logits_and_measures_off_cluster_features(arch, flips, width):
    """The backbone and head split before the first fully connected layer (the paper's CNNs: the
    flattened convolutional map) or, where that is not exact, the last (test-time flips average
    the views before an affine head; EfficientNet-Lite0 has one) give the model's own logits;
    fitted on clustered features, the distance is small at the clusters and large away from
    them, also outside the principal directions of wide ones."""
    import torch

    from smh_ml.models import build
    from smh_ml.models.feature_distance import MAX_DIMENSIONS, FeatureDistance

    torch.manual_seed(0)
    model = build(arch, 3, 32, pretrained=False, flip_average=flips).eval()
    module = FeatureDistance(model, 3, MAX_DIMENSIONS, side=32).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module(x), model(x), atol=1e-5)
        assert torch.allclose(module.logits_and_distance(x)[0], model(x), atol=1e-5)
    assert next(m for m in module.head.modules() if isinstance(m, torch.nn.Linear)).in_features == width
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, width))
    labels = np.repeat(np.arange(3), 400)
    span = rng.normal(0, 1, (8, width))  # training features vary along 8 directions only
    features = centres[labels] + rng.normal(0, 1, (len(labels), 8)) @ span
    module.fit(features, labels)
    near = torch.as_tensor(centres + rng.normal(0, 1, (3, 8)) @ span, dtype=torch.float32)
    away = torch.as_tensor(centres.mean(0, keepdims=True) + rng.normal(0, 3, (1, width)), dtype=torch.float32)
    with torch.no_grad():
        d_near, d_away = module.distance(near), module.distance(away)
    assert float(d_near.max()) < 100 < float(d_away.min()), (d_near, d_away)


def test_the_exported_model_gives_the_distance_as_torch_does(tmp_path):
    import torch

    from smh_ml.deploy.runtime import load_onnx, onnx_predict, onnx_predict_with_distance
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.training.unknown import capture_distances, fit_feature_distance

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 255, (60, 32, 32), dtype=np.uint8)
    module = fit_feature_distance(build("baseline_cnn", 3, 32).eval(), patches, np.arange(60) % 3, 3)
    card = ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(1, 1, 32))
    sess = load_onnx(export_onnx(module, tmp_path / "m.onnx", card))
    probs, distance = onnx_predict_with_distance(sess, patches[:8])
    expected = capture_distances(module, [patches[:8]])[0]
    assert np.allclose(distance, expected, rtol=1e-3, atol=1e-3) and float(distance.min()) > 0
    assert np.allclose(probs, onnx_predict(sess, patches[:8]))  # the probabilities as before


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
    """Trained on clean, dark and bright, a two-tone defect is called one of them: its features
    lie away from all three, so its held-out captures are flagged far more often than known ones."""
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
    from smh_ml.models.feature_distance import MAX_DIMENSIONS, FeatureDistance

    image = np.zeros((80, 80), np.uint8)
    image[4:-4, 4:-4] = 128
    Image.fromarray(image).save(tmp_path / "a.png")
    for threshold, verdict in ((0.0, "unknown"), (1e12, None)):
        card = ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(1, 1, 32), unknown_threshold=threshold)
        module = FeatureDistance(build("baseline_cnn", 3, 32).eval(), 3, MAX_DIMENSIONS, side=32)
        model = export_onnx(module.eval(), tmp_path / f"m{threshold}.onnx", card)
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "a.png"), "--model", str(model), "--json"])
        assert result.exit_code == 0, result.output
        row = json.loads(result.stdout[result.stdout.index("["):])[0]
        assert row["label"] in card.classes and row["verdict"] == (verdict or row["label"])


def test_int8_keeps_the_head_and_the_distance_in_float(tmp_path):
    """fp32 islands: every node after the last convolution (head, feature distance, softmax)
    stays float, every convolution is quantized."""
    import onnx
    import torch

    from smh_ml.export.onnx import export_onnx
    from smh_ml.export.quantization import fp32_islands, quantize_int8
    from smh_ml.models import build
    from smh_ml.training.unknown import fit_feature_distance

    torch.manual_seed(0)
    patches = np.random.default_rng(0).integers(0, 255, (60, 32, 32), dtype=np.uint8)
    module = fit_feature_distance(build("baseline_cnn", 3, 32).eval(), patches, np.arange(60) % 3, 3)
    card = ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(1, 1, 32))
    fp32 = export_onnx(module, tmp_path / "m.onnx", card)
    graph = onnx.load(str(fp32)).graph
    kept = set(fp32_islands(onnx.load(str(fp32))))
    ops = {n.name: n.op_type for n in graph.node}
    assert {n for n, op in ops.items() if op in ("Gemm", "MatMul", "Softmax", "ReduceMin")} <= kept
    assert not any(ops[n] == "Conv" for n in kept)
    int8 = onnx.load(str(quantize_int8(fp32, tmp_path / "q.onnx", patches, per_channel=True, islands=True)))
    quantized_inputs = {o for n in int8.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not any(set(n.input) & quantized_inputs for n in int8.graph.node if n.op_type in ("Gemm", "MatMul"))
    assert any(set(n.input) & quantized_inputs for n in int8.graph.node if n.op_type == "Conv")
