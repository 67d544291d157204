"""The experiment wiring of `smh-ml reproduce` on the tiny ci profile: every table's step
runs, is logged to a real MLflow store, and a second call resumes without redoing work."""

import json

import pytest
from typer.testing import CliRunner

from smh_ml.cli import app
from smh_ml.config.overrides import with_overrides
from smh_ml.config.presets import PROFILES, get_profile
from smh_ml.workflows.reproduce import Reproduction, check_profile

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def ci_patches(sim_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("repro") / "patches"
    result = CliRunner().invoke(app, ["patches", str(sim_root), str(out), "--profile", "ci"])
    assert result.exit_code == 0, result.output
    return out


def test_reproduce_runs_every_table_tracks_and_resumes(ci_patches, tmp_path):
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["reproduce", str(ci_patches), str(tmp_path / "results"), "--profile", "ci",
            "--archs", "inception_cnn,efficientnet_lite0", "--classes", "pits,scratches", "--seeds", "0,1",
            "--tracking-uri", tracking, "--artifact-root", str(tmp_path / "artifacts")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    steps = results["steps"]
    assert {"table6/sdg/pits", "table6/dcgan/scratches", "table8/ota", "table8/pta", "table8/copy_paste",
            "table8/pgan", "table8/pgan_ungated", "table8/pta/seed1", "table8/pgan/seed1", "table8/pgan_ungated/seed1",
            "tables9_10/inception_cnn", "tables9_10/efficientnet_lite0"} <= set(steps)
    assert "table8/ota/seed1" not in steps  # O-TA: one seed
    gan = steps["table6/sdg/pits"]
    for metric in ("domain_fid", "imagenet-efficientnet-lite0_fid", "domain_real_vs_real_fid",
                   "imagenet-efficientnet-lite0_augmented_vs_real_fid", "gate_fid_ceiling"):
        assert metric in gan["metrics"], metric
    assert isinstance(gan["params"]["refused"], bool)
    for step in ("table8/ota", "table8/pta", "table8/pgan", "table8/pgan_ungated/seed1", "tables9_10/inception_cnn"):
        assert 0.0 <= steps[step]["metrics"]["test_accuracy"] <= 1.0
    assert steps["table8/pta/seed1"]["params"]["seed"] == 1 and steps["table8/pta"]["params"]["seed"] == 0
    # the ungated P-GAN holds every class's GAN patches, whatever the gate said of them (a class
    # whose defects fill the ci profile's 32-px patch has no GAN, so nothing to hold)
    from smh_ml.data.datasets import load_training_set

    gans = tmp_path / "results" / "gans" / "sdg"
    with_gan = {c for c in ("pits", "scratches")
                if not json.loads((gans / c / "synthetic" / "gate.json").read_text())["skipped"]}
    assert "pits" in with_gan
    ungated = load_training_set(tmp_path / "results" / "ungated", "pgan").index
    assert set(ungated.loc[ungated["origin"] == "synthetic", "label"]) == with_gan
    gated = load_training_set(tmp_path / "results", "pgan").index
    refused = {c for c in ("pits", "scratches") if steps[f"table6/sdg/{c}"]["params"]["refused"]}
    assert set(gated.loc[gated["origin"] == "synthetic", "label"]) == with_gan - refused
    # classes with patches that passed the content checks go on the validation trial; its verdict picks Table 8's P-GAN
    from smh_ml.workflows.trial import on_trial

    on = on_trial(tmp_path / "results" / "gans" / "sdg", ["pits", "scratches"], get_profile("ci").gan)
    assert ("trial" in results) == bool(on)
    if on:
        trial = results["trial"]
        assert trial["classes"] == on and (tmp_path / "results" / "trial" / "trial.json").is_file()
        chosen = tmp_path / "results" / ("trial" if trial["admitted"] else "" if trial["kept"] else "trial/none")
        assert steps["table8/pgan"]["params"]["train_dir"] == str(chosen)
    assert "cv_real_only_mean" in steps["tables9_10/efficientnet_lite0"]["metrics"]
    assert steps["tables9_10/inception_cnn"]["params"]["train_set"] == "pgan"  # the paper's setting
    report = json.loads((tmp_path / "results" / "tables9_10" / "inception_cnn" / "report.json").read_text())
    assert report["robustness"]  # Fig. 13 rides on the Inception-CNN run
    ota = json.loads((tmp_path / "results" / "table8" / "ota" / "report.json").read_text())
    assert ota["input_size"] == [128, 64] and ota["train_set"] == "ota"
    report_md = (tmp_path / "results" / "REPORT.md").read_text()
    for heading in ("Table 6", "Table 8", "Table 8 over seeds", "Tables 9-10", "Fig. 13"):
        assert heading in report_md
    assert "Majority-class baseline on the held-out captures: **" in report_md
    assert "| training set | seeds | validation % |" in report_md  # what a choice between the sets could use
    assert "| efficientnet_lite0 |" in report_md  # a network the paper did not test: its columns say "-"
    assert steps["table8/pgan"]["run_id"] in report_md
    assert ("### The validation trial of the synthetic sets" in report_md) == bool(on)

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("smh-reproduce")
    runs = client.search_runs([experiment.experiment_id])
    by_id = {r.info.run_id: r for r in runs}
    for step, entry in steps.items():
        assert by_id[entry["run_id"]].data.tags["step"] == step
    assert sum(r.data.tags.get("role") == "reproduce" for r in runs) == 1

    # resume: nothing is trained again, nothing logged twice
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "results" / "results.json").read_text())["steps"] == steps
    runs_after = client.search_runs([experiment.experiment_id])
    assert len(runs_after) == len(runs) + 1  # only the new parent run


def test_reproduce_rejects_unknown_experiments(ci_patches, tmp_path):
    result = CliRunner().invoke(app, ["reproduce", str(ci_patches), str(tmp_path / "r"), "--profile", "ci",
                                      "--experiments", "table7", "--no-track"])
    assert result.exit_code == 1 and "table7" in result.output


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_builds_the_networks_it_trains(name):
    check_profile(PROFILES[name])  # raises on an O-TA size or patch a network cannot take


def test_a_profile_a_network_cannot_take_fails_before_any_step(ci_patches, tmp_path):
    profile = with_overrides(get_profile("ci"), {"augment.ota_size": (96, 96)})
    with pytest.raises(ValueError, match=r"'ci'.*ota_size \(96, 96\).*cannot be pooled"):
        Reproduction(ci_patches, tmp_path / "out", profile).run(["table8"])
    assert not (tmp_path / "out" / "table8").exists()


def test_a_patch_folder_built_with_other_data_settings_is_refused(ci_patches, tmp_path):
    assert json.loads((ci_patches / "profile.json").read_text())["name"] == "ci"
    profile = with_overrides(get_profile("ci"), {"augment.max_clean_patches": 100})
    with pytest.raises(ValueError, match=r"profile\.json.*augment\.max_clean_patches: 200 \(folder\) != 100"):
        Reproduction(ci_patches, tmp_path / "out", profile).run(["table8"])
    assert not (tmp_path / "out" / "table8").exists()


def test_a_changed_training_set_reruns_its_step_and_logs_it_anew(ci_patches, tmp_path):
    """Resuming must not reuse a result computed from other data: P-TA rebuilt with fewer
    clean patches re-trains the P-TA row (a new tracked run), and only that row."""
    import shutil

    from smh_ml.data.datasets import load_training_set
    from smh_ml.io import save_npy

    patches = tmp_path / "patches"
    shutil.copytree(ci_patches, patches)
    logged: list[str] = []

    def track(step, params, metrics, folder):
        logged.append(step)
        return f"run-{len(logged)}"

    def run() -> dict:
        return Reproduction(patches, tmp_path / "out", get_profile("ci"), track).run(["table8"])["steps"]

    first = run()
    # no GANs: no P-GAN row; the copy-paste baseline needs none (the ci profile's GANs learn defects)
    assert logged == ["table8/ota", "table8/pta", "table8/copy_paste"]
    assert run() == first and len(logged) == 3  # resumed: nothing re-run, nothing logged

    pta = load_training_set(patches, "pta")
    keep = (pta.index["label"] != "defect-free").to_numpy() | (pta.index.index % 2 == 0)
    save_npy(patches / "pta" / "arrays.npy", pta.arrays[keep])
    pta.index[keep].to_csv(patches / "pta" / "index.csv", index=False)

    third = run()
    assert logged == ["table8/ota", "table8/pta", "table8/copy_paste", "table8/pta"]  # only the P-TA row
    assert third["table8/ota"] == first["table8/ota"]
    assert third["table8/pta"]["run_id"] == "run-4" != first["table8/pta"]["run_id"]
    report = json.loads((tmp_path / "out" / "table8" / "pta" / "report.json").read_text())
    assert report["train_size"] == int(keep.sum()) < len(pta.arrays)


def test_the_ungated_pgan_is_trained_only_when_the_gate_refused_a_class(tmp_path):
    from smh_ml.workflows.reproduce import any_refused

    for label, refused in (("pits", False), ("scratches", False)):
        (tmp_path / label / "synthetic").mkdir(parents=True)
        (tmp_path / label / "synthetic" / "gate.json").write_text(json.dumps({"refused": refused}))
    assert not any_refused(tmp_path)  # every class passed: P-GAN without the gate is P-GAN
    (tmp_path / "pits" / "synthetic" / "gate.json").write_text(json.dumps({"refused": True}))
    assert any_refused(tmp_path)


def test_domain_extractor_is_sized_in_optimiser_steps(ci_patches, tmp_path):
    """A few epochs of a small P-TA are few optimiser steps (bench's 4 on magnetic tile: about
    140, and an extractor that knew 39% of its own training patches), so the profile names steps."""
    from smh_ml.training.baselines import train_domain_extractor

    profile = with_overrides(get_profile("ci"), {"gan.domain_steps": 7, "gan.domain_epochs": 50})
    report = train_domain_extractor(ci_patches, tmp_path / "domain", profile)
    assert report["steps"] == 7 and report["history"][-1]["step"] == 7
    assert (tmp_path / "domain" / "model.pt").is_file()
    by_epochs = train_domain_extractor(ci_patches, tmp_path / "domain-epochs",
                                       with_overrides(profile, {"gan.domain_steps": 0, "gan.domain_epochs": 1}))
    assert by_epochs["steps"] > 0 and by_epochs["steps"] != 7  # one pass over P-TA


def test_a_class_refused_for_its_fid_alone_is_tried_before_table8(ci_patches, tmp_path):
    """The validation trial inside `smh-ml reproduce`: two fits of Table 8's classifier, the
    verdict in results, trial.json and REPORT.md, Table 8's P-GAN the set it chose; resumed
    without refitting."""
    from smh_ml.workflows.report import render_report

    out = tmp_path / "out"
    repro = Reproduction(ci_patches, out, get_profile("ci"), imagenet=False)
    repro.run(["table6"], classes=["pits"])
    gate_file = out / "gans" / "sdg" / "pits" / "synthetic" / "gate.json"
    gate = json.loads(gate_file.read_text())
    # whatever the ci GAN drew, the verdict is made "refused for its FID alone"
    gate |= {"refused": True, "content_passed": True, "reasons": ["FID 9.00 above the ceiling 1.00"]}
    gate_file.write_text(json.dumps(gate))
    results = Reproduction(ci_patches, out, get_profile("ci"), imagenet=False).run(["table8"])
    trial = results["trial"]
    assert trial["classes"] == ["pits"] and trial["arch"] == "baseline_cnn" and trial["seconds"] > 0
    assert json.loads((out / "trial" / "trial.json").read_text()) == trial
    for name in ("without", "with"):
        report = json.loads((out / "trial" / name / "report.json").read_text())
        assert report["test"] is None  # a trial never looks at the test captures
    chosen = out / ("trial" if trial["admitted"] else "" if trial["kept"] else "trial/none")
    assert results["steps"]["table8/pgan"]["params"]["train_dir"] == str(chosen)
    from smh_ml.data.datasets import load_training_set

    pits = load_training_set(chosen, "pgan").index.query("label == 'pits'")
    assert (pits["origin"] == "synthetic").any() == trial["admitted"]
    assert results["steps"]["trial"]["params"]["admitted"] is trial["admitted"]
    assert "### The validation trial of the synthetic sets" in render_report(out)
    again = Reproduction(ci_patches, out, get_profile("ci"), imagenet=False).run(["table8"])
    assert again["steps"] == results["steps"] and again["trial"] == trial
