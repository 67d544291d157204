import json
import shutil

from typer.testing import CliRunner

from smh_ml.cli import app

runner = CliRunner()


def test_simulate_validate_patches(tmp_path):
    root, out = tmp_path / "captures", tmp_path / "out"
    result = runner.invoke(app, ["simulate", str(root), "--profile", "ci", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "SIMULATED" in result.output
    result = runner.invoke(app, ["validate", str(root), "--profile", "ci"])
    assert result.exit_code == 0 and "passed" in result.output
    result = runner.invoke(app, ["patches", str(root), str(out), "--profile", "ci"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["geometry"]["rows"] == 8


def test_validate_fails_listing_the_file(sim_root, tmp_path):
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root)
    (root / "pits" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = runner.invoke(app, ["validate", str(root), "--profile", "ci"])
    assert result.exit_code == 1
    assert "broken.png" in result.output and "decodes" in result.output
    out = tmp_path / "out"
    result = runner.invoke(app, ["patches", str(root), str(out), "--profile", "ci"])
    assert result.exit_code == 1 and not out.exists()


def test_unknown_profile_and_layout_are_clear(tmp_path):
    result = runner.invoke(app, ["simulate", str(tmp_path / "x"), "--profile", "nope"])
    assert result.exit_code == 1 and "known profiles" in result.output
    result = runner.invoke(app, ["import", "coco", str(tmp_path), str(tmp_path / "y")])
    assert result.exit_code == 1 and "magnetic-tile" in result.output


def test_profiles_lists_paper():
    result = runner.invoke(app, ["profiles"])
    assert result.exit_code == 0 and "paper" in result.output and "demo" in result.output


def test_set_overrides_a_profile_value_and_the_folder_remembers_it(sim_root, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["patches", str(sim_root), str(out), "--profile", "ci",
                                 "--set", "patching.patch=16", "--set", "augment.ota_size=[64,32]"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "geometry.json").read_text())["patch"] == 16
    built = json.loads((out / "profile.json").read_text())
    assert built["name"] == "ci+patching.patch=16+augment.ota_size=[64,32]"
    assert built["augment"]["ota_size"] == [64, 32]
    from smh_ml.config.overrides import apply_settings
    from smh_ml.config.presets import get_profile

    variant = apply_settings(get_profile("ci"), ["patching.patch=16"])
    assert variant.description.endswith("Overridden: patching.patch=16.") and variant.patching.patch == 16
    # a reproduction under the plain profile would mix 16-px patches with 32-px networks
    result = runner.invoke(app, ["reproduce", str(out), str(tmp_path / "r"), "--profile", "ci", "--no-track"])
    assert result.exit_code == 1
    assert "profile.json" in result.output and "patching.patch: 16 (folder) != 32" in result.output
    assert not (tmp_path / "r" / "table8").exists()


def test_a_bad_setting_is_named(sim_root, tmp_path):
    for bad in ("patching.patchsize=16", "patching=16", "nosuch.key=1"):
        result = runner.invoke(app, ["patches", str(sim_root), str(tmp_path / "o"), "--profile", "ci", "--set", bad])
        assert result.exit_code == 1 and bad in result.output and "section.key=value" in result.output
        assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["gan", str(tmp_path / "o"), str(tmp_path / "g"), "--profile", "ci",
                                 "--set", "gan.upsample=bilinear"])
    assert result.exit_code == 1 and "gan.upsample must be 'transposed' or 'resize'" in result.output
    assert not (tmp_path / "g").exists()
