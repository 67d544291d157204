"""The validation trial of the synthetic sets that passed the content checks (smh_ml.workflows.trial)."""

import dataclasses
import json

import numpy as np
import pytest

from smh_ml.synthetic.defects import GanData
from smh_ml.training.budget import candidate_config
from smh_ml.workflows.trial import TRIAL_SET, fid_refused, judge, on_trial, trial_pgan


def _report(accuracy: float | None, captures: int = 50, arch: str = "baseline_cnn") -> dict:
    history = [{"step": 10, "val_accuracy": 0.1}] + ([{"step": 20, "val_accuracy": accuracy}] if accuracy else [])
    return {"arch": arch, "fit": {"best_step": 20}, "final_history": history,
            "decision": {"validation_captures": captures}}


def test_the_trial_admits_only_a_gain_of_min_gain_validation_captures():
    admitted = judge(["pits"], _report(0.80), _report(0.84), min_gain=2)  # 40 -> 42 of 50
    assert admitted.admitted and admitted.without["correct"] == 40 and admitted.with_synthetic["correct"] == 42
    assert "admitted" in admitted.reason and admitted.arch == "baseline_cnn"
    one = judge(["pits"], _report(0.80), _report(0.82), min_gain=2)  # one capture: luck, not evidence
    assert not one.admitted and "refused" in one.reason
    worse = judge(["pits"], _report(0.80), _report(0.70), min_gain=0)
    assert not worse.admitted
    assert judge(["pits"], _report(0.80), _report(0.80), min_gain=0).admitted  # min_gain 0: "no worse"
    with pytest.raises(ValueError, match="no validation captures"):
        judge(["pits"], _report(None), _report(0.9), min_gain=2)


def test_patches_the_gate_admitted_stay_unless_they_cost_min_gain_captures():
    kept = judge(["pits"], _report(0.80), _report(0.78), min_gain=2, refused=[])  # 40 -> 39: luck
    assert kept.admitted and kept.required_gain == -1 and kept.fid_refused == []
    lost = judge(["pits"], _report(0.80), _report(0.76), min_gain=2, refused=[])  # 40 -> 38
    assert not lost.admitted and "refused" in lost.reason
    # one set the FID ceiling refused on trial beside an admitted one: the strict rule for both
    mixed = judge(["pits", "scratches"], _report(0.80), _report(0.80), min_gain=2, refused=["scratches"])
    assert not mixed.admitted and mixed.required_gain == 2 and mixed.kept == ["pits"]  # the gate's set stays
    assert judge(["pits", "scratches"], _report(0.80), _report(0.76), min_gain=2, refused=["scratches"]).kept == []
    assert judge(["pits"], _report(0.80), _report(0.84), min_gain=2).kept == ["pits"]
    assert judge(["pits"], _report(0.80), _report(0.82), min_gain=2).kept == []


def test_classes_admitted_or_refused_for_their_fid_alone_go_on_trial(tmp_path, ci_profile):
    verdicts = {
        "fid-only": {"refused": True, "content_passed": True, "reasons": ["FID 52.99 above the ceiling 0.54"]},
        "flat": {"refused": True, "content_passed": False,
                 "reasons": ["13% of the patches are flat (std < 4 grey levels)", "FID 150 above the ceiling 1.3"]},
        "admitted": {"refused": False, "content_passed": True, "reasons": [], "written": 40},
        # admitted, but the class had its target in real patches: nothing to try
        "passed": {"refused": False, "content_passed": True, "reasons": [], "written": 0},
        "no-gan": {"refused": False, "skipped": "no defect crops", "reasons": ["no defect crops"], "written": 0},
        # written before gate.json had content_passed: read from the reasons
        "old-fid-only": {"refused": True, "reasons": ["FID 6.20 above the ceiling 0.21"]},
        "old-collapse": {"refused": True, "reasons": ["the patches barely differ from each other (diversity 0.1 "
                                                      "< 0.25): mode collapse"]},
    }
    for label, verdict in verdicts.items():
        (tmp_path / label / "synthetic").mkdir(parents=True)
        (tmp_path / label / "synthetic" / "gate.json").write_text(json.dumps(verdict))
    classes = [*verdicts, "no-gan-yet"]
    assert on_trial(tmp_path, classes, ci_profile.gan) == ["fid-only", "admitted", "old-fid-only"]
    assert fid_refused(tmp_path, classes) == ["fid-only", "old-fid-only"]
    assert on_trial(tmp_path, classes, dataclasses.replace(ci_profile.gan, trial=False)) == []
    assert on_trial(tmp_path, classes, dataclasses.replace(ci_profile.gan, gate=False)) == []


@pytest.mark.slow
def test_a_class_on_trial_is_judged_by_two_fits_on_the_same_validation_captures(sim_root, tmp_path, ci_profile):
    """The pipeline's path (the training_set asset): a real GAN's set refused for its FID alone
    is trained with and without, and P-GAN holds its patches exactly when the trial admits them."""
    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_patch_set
    from smh_ml.synthetic.gan.experiment import synthesize_class, train_class_gan
    from smh_ml.synthetic.pgan import class_patches

    profile = dataclasses.replace(ci_profile, gan=dataclasses.replace(ci_profile.gan, epochs=1, pgan_target=30,
                                                                      fid_ceiling=1e-9))
    patch_set = build_patch_set(load_manifest(sim_root), profile)
    real = class_patches(patch_set, "pits")
    gan_dir = tmp_path / "gans" / "sdg"
    train_class_gan(GanData(real, real), "pits", "sdg", gan_dir, profile)
    outcome = synthesize_class("pits", gan_dir, GanData(real, real), profile.gan)
    assert outcome["refused"] and outcome["synthetic"] == 0  # no FID is under 1e-9
    gate = json.loads((gan_dir / "pits" / "synthetic" / "gate.json").read_text())
    if not gate["content_passed"]:  # what one epoch drew decides this; the verdict is on record
        gate |= {"content_passed": True, "reasons": [r for r in gate["reasons"] if r.startswith("FID ")]}
        (gan_dir / "pits" / "synthetic" / "gate.json").write_text(json.dumps(gate))
    cfg = candidate_config(profile.train, "baseline_cnn")
    pgan, trial = trial_pgan(patch_set, gan_dir, ["pits"], profile, cfg, keep=tmp_path / "trial")
    assert trial is not None and trial.classes == ["pits"] and trial.arch == "baseline_cnn"
    assert trial.fid_refused == ["pits"] and trial.required_gain == 2
    assert trial.validation_captures > 0 and trial.with_synthetic["captures"] == trial.without["captures"]
    assert trial.seconds > 0
    on_trial_patches = (gan_dir / "pits" / TRIAL_SET / "index.csv").is_file()
    assert on_trial_patches and json.loads((gan_dir / "pits" / TRIAL_SET / "gate.json").read_text())["passed"] is False
    synthetic = pgan.index[pgan.index["origin"] == "synthetic"]
    assert (len(synthetic) == 30 - len(real)) == trial.admitted and synthetic["label"].isin(["pits"]).all()
    assert (pgan.index["label"] == "pits").sum() == 30  # topped up either way
    # the fit of the chosen set stands for the classifier stage's fit with the same inputs;
    # another training set (or other steps) is trained afresh
    from smh_ml.training.loop import class_names
    from smh_ml.workflows.classifier import fit_stage

    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    chosen = tmp_path / "trial" / ("with" if trial.admitted else "without")
    folders = (tmp_path / "trial" / "with", tmp_path / "trial" / "without")
    _, reused = fit_stage(patch_set, pgan, names, profile, dataclasses.replace(cfg, train_set="pgan"), cv=False,
                          reuse=folders)
    saved = json.loads((chosen / "report.json").read_text())
    assert reused.reused_fit == str(chosen) and reused.fit == saved["fit"]
    assert reused.threshold == saved["decision"]["threshold"] and reused.train_set == "pgan"
    _, fresh = fit_stage(patch_set, pgan, names, profile, dataclasses.replace(cfg, steps=cfg.steps + 2), cv=False,
                         reuse=folders)
    assert fresh.reused_fit is None and fresh.fit["steps"] == cfg.steps + 2
    # the trial off: the gated set, no fits
    off = dataclasses.replace(profile, gan=dataclasses.replace(profile.gan, trial=False))
    plain, none = trial_pgan(patch_set, gan_dir, ["pits"], off, cfg)
    assert none is None and not (plain.index["origin"] == "synthetic").any()
    assert np.isin(plain.index["origin"], ["real", "augmented"]).all()
