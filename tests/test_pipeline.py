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
