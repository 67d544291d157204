"""The Dagster code location on an ephemeral instance, with the ci profile."""

import shutil

import dagster as dg
import pytest

from pipelines.assets.data import MANIFEST_CHECK, capture_manifest, patch_sets
from pipelines.definitions import defs
from pipelines.resources import CaptureDataResource, ProfileResource, StorageResource


def _resources(root, storage):
    return {"profile": ProfileResource(name="ci"), "captures": CaptureDataResource(root=str(root)),
            "storage": StorageResource(root=str(storage))}


def test_definitions_load():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw_captures", "capture_manifest", "patch_sets"} <= keys
    assert defs.resolve_job_def("main").name == "main"


def test_materialize_all(sim_root, tmp_path):
    result = dg.materialize([capture_manifest, patch_sets], instance=dg.DagsterInstance.ephemeral(),
                            resources=_resources(sim_root, tmp_path / "artifacts"))
    assert result.success
    samples = [e for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "patch_sets"][0].materialization.metadata["samples"]
    assert isinstance(samples, dg.MarkdownMetadataValue) and "data:image/png;base64," in samples.value
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"gx_capture_manifest": True, "gx_patch_sets": True}
    assert (tmp_path / "artifacts" / "ci" / "patch_sets" / "patches.npy").exists()


def test_bad_capture_blocks_downstream(sim_root, tmp_path):
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root)
    (root / "scratches" / "cut.jpg").write_bytes((root / "scratches" / "sim-00039.jpg").read_bytes()[:500])
    storage = tmp_path / "artifacts"
    result = dg.materialize([capture_manifest, patch_sets], instance=dg.DagsterInstance.ephemeral(),
                            resources=_resources(root, storage), raise_on_error=False)
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}[MANIFEST_CHECK]
    assert not evaluation.passed
    assert "cut.jpg" in evaluation.metadata["report"].value
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "patch_sets" not in materialized
    assert not (storage / "ci" / "patch_sets").exists()


@pytest.mark.parametrize("asset", ["capture_manifest", "patch_sets"])
def test_assets_are_in_the_data_group(asset):
    spec = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}[asset]
    assert spec.group_name == "data"


def test_the_profile_takes_set_overrides_from_run_config(sim_root, tmp_path):
    profile = ProfileResource(name="ci", settings=["train.steps=7"]).get()
    assert profile.train.steps == 7 and profile.name == "ci+train.steps=7"
    with pytest.raises(KeyError):
        ProfileResource(name="ci", settings=["train.no_such_key=1"]).get()
    # the Launchpad's resource config replaces the environment's default for one run
    result = dg.materialize([capture_manifest], instance=dg.DagsterInstance.ephemeral(),
                            resources=_resources(sim_root, tmp_path / "artifacts"),
                            run_config={"resources": {"profile": {"config": {"name": "ci",
                                                                             "settings": ["split.seed=3"]}}}})
    assert result.success
    assert (tmp_path / "artifacts" / "ci+split.seed=3" / "capture_manifest.csv").is_file()


def test_pictures_are_inline_and_numbers_rounded(tmp_path):
    from PIL import Image

    from pipelines.assets.common import counts_table, picture, rounded

    Image.new("L", (8, 8), 128).save(tmp_path / "p.png")
    shown = picture(tmp_path / "p.png", "grid")
    assert "![grid](data:image/png;base64," in shown.value
    assert "no picture" in picture(tmp_path / "missing.png", "grid").value
    assert rounded(0.3333333432674408) == 0.3333 and rounded(float("nan")) == "nan" and rounded(3) == 3
    assert "| class | F1 |" in counts_table({"pits": 0.91234}, value="F1").value


def test_mlflow_run_links_are_urls(tmp_path):
    from pipelines.resources import MlflowResource

    tracker = MlflowResource(tracking_uri=f"sqlite:///{tmp_path}/m.db", artifact_root=str(tmp_path / "a"),
                             ui_url="http://127.0.0.1:5000").tracker()
    run = tracker.client().create_run(tracker.experiment_id()).info.run_id
    link = tracker.run_link(run)
    assert link == f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id()}/runs/{run}"


def test_patch_sets_under_auto_record_the_recipe_for_every_later_asset(sim_root, tmp_path):
    """The default profile: the patch_sets asset measures the captures, shows the recipe and
    its reasons on its page, and what it recorded is the profile later assets resolve."""
    storage = tmp_path / "artifacts"
    resources = {"profile": ProfileResource(name="auto", settings=["validation.height_range=[16,8192]",
                                                                   "validation.width_range=[16,8192]"]),
                 "captures": CaptureDataResource(root=str(sim_root)), "storage": StorageResource(root=str(storage))}
    result = dg.materialize([capture_manifest, patch_sets], instance=dg.DagsterInstance.ephemeral(),
                            resources=resources)
    assert result.success
    page = [e for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "patch_sets"][0].materialization.metadata
    assert page["recipe"].value.startswith("tiles:") and "smallest defects" in page["recipe_reasons"].value
    assert page["candidates"].value == "inception_cnn, baseline_cnn"
    name = resources["profile"].get().name
    resolved = resources["profile"].resolved(StorageResource(root=str(storage)))
    assert resolved.name == name and resolved.train.budget_minutes > 0
    assert resolved.patching.tiles == page["geometry"].value["rows"] * page["geometry"].value["cols"]


def test_one_fid_ceiling_for_the_gate_and_the_check_without_renaming_the_profile(monkeypatch):
    """SMH_FID_CEILING is the gates resource's ceiling; the synthetic gate and the GAN check
    both read it through gan_config, and the profile (so its storage folder) keeps its name."""
    from pipelines.definitions import default_resources
    from pipelines.resources import QualityGatesResource

    monkeypatch.setenv("SMH_FID_CEILING", "inf")
    resources = default_resources()
    prof = resources["profile"].get()
    assert prof.name == "auto" and prof.gan.fid_ceiling is None
    assert resources["gates"].gan_config(prof).fid_ceiling == float("inf")
    assert QualityGatesResource().gan_config(prof) is prof.gan
    assert QualityGatesResource(fid_ceiling=50.0).gan_config(prof).fid_ceiling == 50.0


def test_steps_fork_from_a_server_with_the_code_location_loaded(monkeypatch):
    """Steps start from a fork server that imported the code location once (a spawned step
    re-imports Dagster, torch, MLflow and GX); SMH_START_METHOD=spawn restores Dagster's
    default, and a start method it does not know is refused by name."""
    from pipelines.definitions import executor

    def start_method(definition: dg.ExecutorDefinition, run_config: dict | None = None) -> dict:
        return definition.config_schema.resolve_config(run_config or {}).value["config"]["start_method"]

    monkeypatch.delenv("SMH_START_METHOD", raising=False)
    assert start_method(executor()) == {"forkserver": {"preload_modules": ["pipelines.definitions"]}}
    # a run's own executor config still applies
    assert start_method(executor(), {"config": {"start_method": {"spawn": {}}}}) == {"spawn": {}}
    resolved = executor().config_schema.resolve_config({"config": {"max_concurrent": 1}}).value["config"]
    assert resolved["max_concurrent"] == 1 and "forkserver" in resolved["start_method"]
    monkeypatch.setenv("SMH_START_METHOD", "spawn")
    assert start_method(executor()) == {"spawn": {}}
    monkeypatch.setenv("SMH_START_METHOD", "fork")
    with pytest.raises(ValueError, match="SMH_START_METHOD='fork'"):
        executor()
