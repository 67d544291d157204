"""The recipe from the data (``auto``): measured geometry on generated sets with known defect
sizes, the record that travels from the patch set to the model and ``smh-ml predict``, the
minute budget, selection on validation captures, and named profiles unchanged."""

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from smh_ml.config.overrides import apply_settings
from smh_ml.config.presets import PROFILES, get_profile
from smh_ml.config.schema import profile_from_dict
from smh_ml.data.captures import load_manifest
from smh_ml.data.recipe import (
    TILE_PATCH,
    WHOLE_SIDE,
    derive_recipe,
    is_auto,
    measure_capture_set,
    min_defect_px,
    profile_for_folder,
    resolve_profile,
)
from smh_ml.training.budget import MAX_EVAL_SHARE, MIN_PASSES, MIN_SHARE, StepCost, plan_budget
from smh_ml.workflows.classifier import ClassifierReport, select_candidate

runner = CliRunner()


def make_set(root, side: int, defect: int, classes=("dent", "spot"), per_class=10, clean=10,
             height=None, seed=0):
    """Captures of ``height`` x ``side`` px (grey texture on a black border) with one square
    defect of ``defect`` px each, its mask beside it; ``clean`` defect-free captures."""
    rng = np.random.default_rng(seed)
    height = height or side
    labels = [*(["defect-free"] * clean), *(c for c in classes for _ in range(per_class))]
    for i, label in enumerate(labels):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        image = np.zeros((height, side), np.uint8)
        image[4:-4, 4:-4] = rng.normal(128, 12, (height - 8, side - 8)).clip(40, 220).astype(np.uint8)
        mask = np.zeros_like(image)
        if label != "defect-free":
            y, x = rng.integers(8, height - defect - 8), rng.integers(8, side - defect - 8)
            shade = 30 if label == classes[0] else 230
            image[y:y + defect, x:x + defect] = shade
            mask[y:y + defect, x:x + defect] = 255
            Image.fromarray(mask).save(folder / f"c{i:03d}.mask.png")
        Image.fromarray(image).save(folder / f"c{i:03d}.png")
    return root


def test_tiny_defects_give_tiles_and_large_ones_whole_captures(tmp_path):
    tiny = make_set(tmp_path / "tiny", side=512, defect=4)
    large = make_set(tmp_path / "large", side=512, defect=96)
    stats_t, boxes = measure_capture_set(load_manifest(tiny), "defect-free")
    stats_l, _ = measure_capture_set(load_manifest(large), "defect-free")
    assert boxes.shape == (30, 4)
    # the crop drops the black border: 504 px a side, the defect's share of it measured exactly
    assert stats_t.height == stats_t.width == 504
    assert stats_t.defect_extent["dent"] == pytest.approx(4 / 504, rel=1e-3)
    assert stats_l.defect_extent["spot"] == pytest.approx(96 / 504, rel=1e-3)
    assert stats_t.clean_captures == 10 and stats_t.masked_defect_captures == 20

    tiles, whole = derive_recipe(stats_t), derive_recipe(stats_l)
    assert whole.geometry == "whole" and whole.tiles == 1 and whole.patch == WHOLE_SIDE
    assert whole.candidates[0] == "efficientnet_lite0"
    assert tiles.geometry == "tiles" and tiles.patch == TILE_PATCH
    assert tiles.candidates[0] == "inception_cnn"
    # the smallest tile count at which a 4/504 defect spans the tile model's 3 px
    need = (min_defect_px("inception_cnn") / (TILE_PATCH * 4 / 504)) ** 2
    assert tiles.tiles >= need and tiles.defect_px >= min_defect_px("inception_cnn")
    assert any("tiles" in r for r in tiles.reasons) and any("whole" in r for r in whole.reasons)


def test_defect_only_sets_are_named_and_aspect_shapes_the_grid(tmp_path):
    root = make_set(tmp_path / "tall", side=256, height=1024, defect=3, clean=0)
    stats, _ = measure_capture_set(load_manifest(root), "defect-free")
    recipe = derive_recipe(stats)
    assert stats.clean_captures == 0 and any("no clean captures" in r for r in recipe.reasons)
    profile = resolve_profile(get_profile("auto"), recipe)
    assert recipe.geometry == "tiles" and profile.patching.tiles == recipe.tiles
    # a 4:1 capture gets a grid four times as tall as wide (Eq. 5-7)
    rows = round(stats.aspect * round((recipe.tiles / stats.aspect) ** 0.5))
    assert recipe.tiles % rows == 0 and rows / (recipe.tiles // rows) == pytest.approx(4, rel=0.3)


def test_auto_resolves_to_the_presets_on_their_data_and_keeps_user_settings(tmp_path):
    stats, _ = measure_capture_set(load_manifest(make_set(tmp_path / "l", 512, 96)), "defect-free")
    auto = apply_settings(get_profile("auto"), ["train.steps=7", "augment.pta_target=30"])
    assert is_auto(auto) and not is_auto(get_profile("demo"))
    resolved = resolve_profile(auto, derive_recipe(stats))
    whole = get_profile("whole")
    assert resolved.name == auto.name == 'auto+train.steps=7+augment.pta_target=30'
    assert resolved.train.steps == 7 and resolved.augment.pta_target == 30
    assert resolved.patching == whole.patching and resolved.gan == whole.gan
    assert resolved.train.candidates == ("efficientnet_lite0", "inception_cnn") and resolved.train.budget_minutes > 0
    assert dataclasses.replace(resolved.train, steps=whole.train.steps, budget_minutes=0.0) == whole.train
    assert profile_from_dict(json.loads(json.dumps(resolved.to_dict()))) == resolved


def _digest(profile) -> str:
    from smh_ml.training.budget import candidate_config

    data = {k: v for k, v in profile.to_dict().items() if k not in ("description", "settings")}
    data["train"] = {k: v for k, v in data["train"].items() if k not in ("budget_minutes", "scale_steps")}
    # the defect-GAN settings and the gate's recall floor came later: at their defaults (whole-patch
    # GANs, floor at half the real halves' recall) a profile is unchanged
    defaults = {"source": "patches", "crop": 32, "crop_margin": 2.0, "gate_recall_factor": 0.5, "mode_seeking": 0.0}
    data["gan"] = {k: v for k, v in data["gan"].items() if not (k in defaults and v == defaults[k])}
    # the per-architecture budgets, once a train setting, now come from the architecture cards:
    # the digest holds what every candidate trains, in the setting's old form
    train = profile.train
    data["train"]["arch_budgets"] = [[a, c.steps, c.eval_every] for a in train.architectures()
                                     if (c := candidate_config(train, a)).steps != train.steps]
    # int8's fp32 islands came with the feature-distance output, the same for every profile (no
    # table of the paper involves int8): the digest holds the deploy section without them
    data["deploy"] = {k: v for k, v in data["deploy"].items() if k != "fp32_islands"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def test_named_profiles_resolve_exactly_as_before():
    # digests of every value of the named profiles before the recipe from the data existed; demo,
    # whole and ci since their GANs learn defect crops (gan.source = defects, issue 29), demo and
    # whole since those GANs add the mode-seeking term (gan.mode_seeking = 0.3), every other
    # section of theirs unchanged (their digests before the defect crops: 1a348ab98d3ec97b,
    # ea55b779909f382d, 08837c501a629a35; before the mode-seeking term: a248641bbe0c5348,
    # 0cc9ab8e36edd1c7)
    before = {"paper": "9b65dc0dce18d32c", "demo": "dd94958fa1256e74", "whole": "bada178c803786ca",
              "bench": "0c6a75080ea3918c", "ci": "20c9c18acc4f59b0"}
    assert {name: _digest(PROFILES[name]) for name in before} == before
    assert all(PROFILES[name].train.budget_minutes == 0 for name in before)


def test_the_budget_trains_final_fits_first_and_cv_of_the_chosen_with_what_is_left():
    fast = StepCost("a", steps=600, eval_every=200, seconds_per_step=0.1, eval_seconds=1.0, batch_size=64)
    slow = StepCost("b", steps=1500, eval_every=250, seconds_per_step=1.0, eval_seconds=5.0, batch_size=32)
    roomy = plan_budget([fast, slow], 10_000, folds=2)
    assert roomy.steps() == {"a": (600, 200), "b": (1500, 250)} and not roomy.dropped
    assert roomy.cv_steps("a") == 600 and roomy.cv_steps("b") == 1500
    tight = plan_budget([fast, slow], 600, folds=2)  # b would get under MIN_SHARE of its steps: left out
    assert tight.dropped == ("b",) and tight.steps() == {"a": (600, 200)}
    # a's final fit takes 63 s; the 537 s left pay for its 2 folds at full steps
    assert tight.cv_steps("a") == 600
    short = plan_budget([fast], 100, folds=2)  # 37 s left: folds of 185 steps, over MIN_CV_SHARE
    assert short.cv_steps("a") == 185
    no_cv = plan_budget([fast], 70, folds=2)  # 7 s left: 35 steps a fold is under MIN_CV_SHARE: none
    assert no_cv.cv_steps("a") == 0 and "no CV" in no_cv.reasons[-1]
    scaled = plan_budget([fast], 30, folds=0)  # a alone, scaled to the seconds it has
    steps, every = scaled.steps()["a"]
    assert steps < 600 and scaled.candidates[0].planned_seconds <= 30 and every < 200
    assert scaled.candidates[0].share < MIN_SHARE  # the last candidate is kept, however short
    with pytest.raises(ValueError, match="positive"):
        plan_budget([fast], 0)


def test_a_short_budget_thins_validation_passes_and_takes_steps_from_the_last_candidate_first():
    # the first choice: 300 steps of 3 s and a 60 s pass every 50 steps = 900 + 360 s
    first = StepCost("first", steps=300, eval_every=50, seconds_per_step=3.0, eval_seconds=60.0, batch_size=32)
    hedge = StepCost("hedge", steps=600, eval_every=200, seconds_per_step=0.25, eval_seconds=2.0, batch_size=64)
    plan = plan_budget([first, hedge], 1200)
    (steps, every), (hedge_steps, _) = plan.steps()["first"], plan.steps()["hedge"]
    # six passes would cost 40% of its training time: three are kept (MAX_EVAL_SHARE = 20%)
    assert every == 100 and math.ceil(steps / every) * 60 <= MAX_EVAL_SHARE * 900
    # 300 steps and three passes (1080 s) leave the hedge 120 s: it gives up steps, the first keeps all
    assert steps == 300 and MIN_SHARE * 600 <= hedge_steps < 600 and not plan.dropped
    assert sum(c.planned_seconds for c in plan.candidates) <= 1200
    lean = StepCost("lean", steps=300, eval_every=50, seconds_per_step=1.0, eval_seconds=200.0, batch_size=32)
    assert math.ceil(300 / plan_budget([lean], 1000).steps()["lean"][1]) == MIN_PASSES  # never fewer
    tighter = plan_budget([first, hedge], 900)  # the hedge at half its steps; the first pays the rest
    assert tighter.steps()["hedge"][0] == 300 and tighter.steps()["first"][0] < 300
    assert sum(c.planned_seconds for c in tighter.candidates) <= 900
    assert plan_budget([first, hedge], 10_000).steps()["first"] == (300, 50)  # room: passes as configured


def _report(arch, val_accuracy, test_accuracy, parameters):
    return ClassifierReport(profile="auto", arch=arch, classes=["defect-free", "x"], geometry={}, train_set="pta",
                            train_size=1, train={}, device="cpu", hardware={}, preprocessing={},
                            parameters=parameters, fit={"best_step": 2},
                            final_history=[{"step": 1, "val_accuracy": 0.1}, {"step": 2, "val_accuracy": val_accuracy}],
                            test={"accuracy": test_accuracy})


def test_the_candidate_that_ships_is_chosen_on_validation_captures_not_the_test():
    reports = {"a": _report("a", 0.90, 0.99, 10), "b": _report("b", 0.95, 0.80, 20)}
    chosen = select_candidate(reports)
    assert chosen["best"] == "b" and chosen["metric"] == "validation image accuracy"
    tie = select_candidate({"a": _report("a", 0.9, 0.5, 10), "b": _report("b", 0.9, 0.9, 5)})
    assert tie["best"] == "b"  # a tie goes to the smaller model


def test_auto_travels_from_patches_to_the_model_and_predict(tmp_path):
    """`smh-ml patches` and `smh-ml train` with no profile flag: the recipe is in the patch
    set, the model's report and ONNX metadata, and `smh-ml predict` decides with it. The set
    has no clean captures and large defects: whole captures, decided among its defect classes."""
    from smh_ml.cli import app
    from smh_ml.deploy.runtime import onnx_metadata

    root = make_set(tmp_path / "caps", side=128, defect=40, clean=0, per_class=16)
    patches = tmp_path / "patches"
    result = runner.invoke(app, ["patches", str(root), str(patches), "--set", "patching.patch=32"])
    assert result.exit_code == 0, result.output
    assert "recipe from the data (whole" in result.output
    record = json.loads((patches / "profile.json").read_text())
    assert record["recipe"]["geometry"] == "whole" and record["resolved"]["patching"]["patch"] == 32
    assert profile_for_folder(get_profile("auto"), patches).patching.tiles == 1

    out = tmp_path / "model"
    result = runner.invoke(app, ["train", str(patches), str(out), "--no-cv", "--no-robustness",
                                 "--set", "train.candidates=[\"baseline_cnn\",\"inception_cnn\"]",
                                 "--set", "train.flip_average=false", "--set", "train.batch_size=8",
                                 "--steps", "6", "--set", "train.eval_every=3",
                                 "--set", "train.val_fraction=0.25", "--set", "train.budget_minutes=2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"] == record["recipe"]
    assert report["selection"]["metric"] == "validation image accuracy"
    assert set(report["selection"]["scores"]) == {"baseline_cnn", "inception_cnn"}
    assert report["arch"] == report["selection"]["best"]
    assert (out / "candidates" / "inception_cnn" / "report.json").is_file()
    assert report["budget"]["budget_minutes"] == 2 and report["fit"]["steps"] <= 6
    assert onnx_metadata(out / "model.onnx")["recipe"]["geometry"] == "whole"
    # the precision gate ran on the validation captures and its verdicts are in the shipped card
    assert report["int8"]["split"] == "validation" and report["int8"]["captures"] > 0
    assert set(onnx_metadata(out / "model.onnx")["fast_paths"]) == {"int8", "openvino-bf16"}
    (out / "model.int8.onnx").unlink(missing_ok=True)
    result = runner.invoke(app, ["quantize", str(out), str(patches), "--tolerance", "1.0"])
    assert result.exit_code == 0, result.output
    assert (out / "model.int8.onnx").is_file() and "bf16" in result.output
    assert onnx_metadata(out / "model.onnx")["fast_paths"]["int8"]["accepted"] is True
    assert "fast_paths" not in onnx_metadata(out / "model.int8.onnx")  # the fp32 file's verdicts are not its own
    assert json.loads((out / "report.json").read_text())["int8"]["accepted"] is True  # the report follows
    result = runner.invoke(app, ["predict", str(root / "dent"), "--model", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert "recipe whole" in result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    assert len(rows) == 16 and {r["label"] for r in rows} <= {"dent", "spot"}


def test_the_budget_stops_a_long_schedule_in_time_on_a_tiny_set(tmp_path):
    """A schedule of 100,000 steps under a budget of 0.5 min: the warm-up's measured step
    cost cuts it to what fits, and the fit runs exactly the planned steps."""
    from smh_ml.data.datasets import build_patch_set, build_pta
    from smh_ml.training.loop import class_names
    from smh_ml.workflows.classifier import Candidate, plan_training

    root = make_set(tmp_path / "caps", side=96, defect=30, per_class=8, clean=8)
    profile = apply_settings(get_profile("ci"), ["train.steps=100000", "train.budget_minutes=0.5",
                                                 "train.candidates=[\"baseline_cnn\"]", "train.cv_folds=1"])
    patch_set = build_patch_set(load_manifest(root), profile)
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    candidate = Candidate("baseline_cnn", patch_set, build_pta(patch_set, profile.clean_class, profile.augment),
                          profile, profile.train)
    cfgs, plan = plan_training([candidate], names, profile)
    steps = cfgs["baseline_cnn"].steps
    assert 20 <= steps < 100_000 and plan["folds"] == 1
    assert plan["candidates"][0]["planned_seconds"] <= plan["budget_seconds"]
    assert plan["budget_seconds"] == pytest.approx(30 - plan["warmup_seconds"], abs=0.1)


def test_a_set_without_masks_gets_whole_captures_labelled_as_their_folders(tmp_path):
    """Folders of labelled captures and no masks: only a whole capture takes its label, so
    the recipe picks whole captures and every capture is a usable training example."""
    from smh_ml.data.datasets import build_patch_set, build_pta

    root = make_set(tmp_path / "caps", side=96, defect=30, per_class=6, clean=6)
    for mask in root.glob("*/*.mask.png"):
        mask.unlink()
    manifest = load_manifest(root)
    stats, boxes = measure_capture_set(manifest, "defect-free")
    recipe = derive_recipe(stats)
    assert not stats.defect_extent and recipe.geometry == "whole"
    assert any("no defect masks" in r for r in recipe.reasons)
    profile = apply_settings(resolve_profile(get_profile("auto"), recipe), ["patching.patch=32"])
    patch_set = build_patch_set(manifest, profile, boxes=boxes)
    assert patch_set.index["usable"].all() and set(patch_set.index["label"]) == {"defect-free", "dent", "spot"}
    pta = build_pta(patch_set, profile.clean_class, profile.augment)
    assert set(pta.index["label"]) == {"defect-free", "dent", "spot"}


def test_colour_folders_of_defect_classes_only_pass_under_auto(tmp_path):
    """A user's own folders: colour captures, defect classes only, no masks or boxes. `auto`
    reads colour as grey (as predict does) and takes whole captures labelled as their folders;
    a named tile profile still refuses such a set by file."""
    from smh_ml.cli import app
    from smh_ml.data.validation import NO_CLEAN_RULE, validate_manifest

    root = make_set(tmp_path / "caps", side=96, defect=30, per_class=6, clean=0)
    for mask in root.glob("*/*.mask.png"):
        mask.unlink()
    for path in root.glob("*/*.png"):
        grey = np.asarray(Image.open(path))
        Image.fromarray(np.stack([grey, grey // 2, 255 - grey], -1)).save(path)  # true colour
    manifest = load_manifest(root)
    report = validate_manifest(manifest, get_profile("auto"))
    assert report.success, report.format()
    assert any("converted to 8-bit grey" in n for n in report.notes)
    assert any("no masks: whole captures" in n for n in report.notes)
    refused = validate_manifest(manifest, get_profile("ci"))
    assert {v.rule for v in refused.violations} >= {NO_CLEAN_RULE}
    patches = tmp_path / "patches"
    result = runner.invoke(app, ["patches", str(root), str(patches), "--set", "patching.patch=32"])
    assert result.exit_code == 0, result.output
    record = json.loads((patches / "profile.json").read_text())
    assert record["recipe"]["geometry"] == "whole" and record["resolved"]["validation"]["convert_color"]


def test_a_capture_is_inspected_once_and_cut_once_on_its_way_to_patches(tmp_path, monkeypatch):
    """After the manifest, validation, the recipe and patching decode each capture twice: one
    inspection that all three earlier questions share, and the cut."""
    from collections import Counter

    from smh_ml.data import captures as captures_module
    from smh_ml.data.datasets import build_patch_set
    from smh_ml.data.inspection import _inspect, _measure_mask
    from smh_ml.data.recipe import profile_for_captures
    from smh_ml.data.validation import validate_manifest

    root = make_set(tmp_path / "set", 160, 12)
    manifest = load_manifest(root)
    _inspect.cache_clear(), _measure_mask.cache_clear()
    decoded, real_open = Counter(), captures_module.open_image
    monkeypatch.setattr(captures_module, "open_image",
                        lambda source, name=None, max_pixels=None: decoded.update([str(source)])
                        or real_open(source, name, max_pixels))
    profile = get_profile("auto")
    validate_manifest(manifest, profile).raise_for_failure()
    resolved, _, boxes = profile_for_captures(profile, manifest)
    build_patch_set(manifest, resolved, boxes=boxes)
    images = set(manifest["path"].astype(str))
    assert {decoded[p] for p in images} == {2}
    # a mask: once for the recipe's measurement, once to label the tiles
    assert {decoded[str(p)] for p in manifest["mask_path"].dropna()} == {2}
    # a changed file is inspected again, not read back
    path = manifest["path"].iloc[0]
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    changed = load_manifest(root)
    decoded.clear()
    validate_manifest(changed, profile)
    assert decoded[str(path)] == 1 and all(decoded[p] == 0 for p in images - {str(path)})


@pytest.mark.parametrize("defect, primary, other", [(4, "tiles", None), (8, "tiles", "whole"),
                                                    (16, "whole", "tiles"), (96, "whole", None)])
def test_a_close_call_names_the_other_geometry_and_only_then(tmp_path, defect, primary, other):
    """Within 2x of the whole-capture minimum (6 px at 256) either geometry may win: the
    recipe names the other one, with the same split and validation captures."""
    from smh_ml.data.recipe import AMBIGUOUS_FACTOR, alternate_profile

    stats, _ = measure_capture_set(load_manifest(make_set(tmp_path / "s", 512, defect)), "defect-free")
    recipe = derive_recipe(stats)
    assert recipe.geometry == primary and recipe.ambiguous == (other is not None)
    resolved = resolve_profile(get_profile("auto"), recipe)
    alt = alternate_profile(resolved, recipe)
    if other is None:
        assert recipe.alternate is None and alt is None
        return
    assert recipe.alternate.geometry == other and any("a close call" in r for r in recipe.reasons)
    if other == "tiles":  # the tiles resolve the defect clearly: twice the tile model's minimum
        assert recipe.alternate.defect_px >= AMBIGUOUS_FACTOR * min_defect_px("inception_cnn") * 0.75
        assert alt.patching.patch == TILE_PATCH and alt.patching.tiles == recipe.alternate.tiles > 1
    else:
        assert alt.patching.patch == WHOLE_SIDE and alt.patching.tiles == 1
    assert alt.split == resolved.split and alt.train.val_fraction == resolved.train.val_fraction
    assert alt.train.seed == resolved.train.seed and alt.train.candidates == recipe.alternate.candidates


def test_a_close_call_trains_both_geometries_and_what_ships_carries_its_own(tmp_path, monkeypatch):
    """`smh-ml patches` cuts both geometries of a close call from the same split; `smh-ml
    train` trains a candidate of each on the same training captures and validation captures;
    whichever ships, its ONNX card holds its own geometry and `smh-ml predict` cuts captures so."""
    import pandas as pd

    import smh_ml.workflows.classifier as classifier
    from smh_ml.cli import app
    from smh_ml.deploy.runtime import onnx_metadata
    from smh_ml.training.loop import validation_captures

    root = make_set(tmp_path / "caps", side=128, defect=4, per_class=10, clean=10)  # 8.5 px at 256
    patches = tmp_path / "patches"
    result = runner.invoke(app, ["patches", str(root), str(patches), "--set", "patching.patch=32"])
    assert result.exit_code == 0, result.output
    assert "a close call" in result.output and "close call:" in result.output
    main, alt = (pd.read_csv(f / "captures.csv") for f in (patches, patches / "alternate"))
    assert (main[["capture_id", "split"]] == alt[["capture_id", "split"]]).all().all()
    alt_geometry = json.loads((patches / "alternate" / "geometry.json").read_text())
    assert alt_geometry["patch"] == TILE_PATCH and alt_geometry["rows"] * alt_geometry["cols"] > 1
    assert json.loads((patches / "geometry.json").read_text())["patch"] == 32

    settings = ["--set", "train.candidates=[\"baseline_cnn\"]", "--set", "train.flip_average=false",
                "--set", "train.batch_size=8", "--set", "train.eval_every=3", "--set", "train.val_fraction=0.25",
                "--set", "train.budget_minutes=2"]
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", str(patches), str(out), "--no-cv", "--no-robustness", "--steps", "6",
                                 *settings])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["selection"]["scores"]) == {"baseline_cnn", "baseline_cnn-tiles"}
    alt_report = json.loads((out / "candidates" / "baseline_cnn-tiles" / "report.json").read_text())
    assert alt_report["patch_folder"] == "alternate" and alt_report["fit"]["steps"] <= 6
    assert alt_report["geometry"] == alt_geometry and alt_report["test"]["n"] == report["test"]["n"]
    # the same validation captures judge both
    from smh_ml.data.datasets import load_patch_set
    names = report["classes"]
    cfg = classifier.TrainConfig(val_fraction=0.25)
    ids = [validation_captures(load_patch_set(f), names, cfg) for f in (patches, patches / "alternate")]
    assert list(ids[0].captures["capture_id"]) == list(ids[1].captures["capture_id"])

    # the other geometry shipped (as the validation captures may choose): it carries its own
    monkeypatch.setattr(classifier, "select_candidate", lambda reports: {
        "best": "baseline_cnn-tiles", "metric": "forced by the test", "scores": {}, "parameters": {}})
    shipped = tmp_path / "model-tiles"
    result = runner.invoke(app, ["train", str(patches), str(shipped), "--no-cv", "--no-robustness", "--steps", "6",
                                 *settings])
    assert result.exit_code == 0, result.output
    card = onnx_metadata(shipped / "model.onnx")
    assert card["geometry"]["patch"] == TILE_PATCH and card["recipe"]["geometry"] == "tiles"
    result = runner.invoke(app, ["predict", str(root / "dent"), "--model", str(shipped), "--json"])
    assert result.exit_code == 0, result.output
    assert "recipe tiles" in result.output
    rows = json.loads(result.stdout[result.stdout.index("["):])
    assert len(rows) == 10
