import os
import subprocess
import sys

import numpy as np
import pytest

from smh_ml.data.versioning import DataVersionError, commit_data, data_version, folder_fingerprint
from smh_ml.io import atomic_dir, atomic_write_text, load_npy, save_npy


def test_data_version_reads_the_md5(tmp_path):
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    assert data_version(tmp_path / "data.dvc") == "abc123"
    assert data_version(tmp_path / "missing.dvc") is None
    (tmp_path / "bad.dvc").write_text("outs: [\n")
    with pytest.raises(DataVersionError, match="bad.dvc: not a valid .dvc file"):
        data_version(tmp_path / "bad.dvc")


def test_commit_data_with_real_dvc(tmp_path, sim_root):
    import shutil

    repo = tmp_path / "repo"
    repo.mkdir()
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc = [sys.executable, "-m", "dvc"]  # the venv's dvc, whether or not its bin is on PATH
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=repo,
                   check=True, env=env)
    shutil.copytree(sim_root, repo / "data")
    version = commit_data(repo)
    assert version == data_version(repo / "data.dvc") and len(version) == 32
    assert any((tmp_path / "remote").rglob("*"))  # pushed
    (repo / "data" / "defect-free" / "extra.txt").write_text("new")
    assert commit_data(repo, push=False) != version  # new captures, new version
    with pytest.raises(DataVersionError, match="no .dvc folder"):
        commit_data(tmp_path)


def test_a_fresh_clone_pulls_the_committed_data(tmp_path, sim_root):
    """git clone + dvc pull from the default remote gives back exactly the committed captures."""
    import filecmp
    import shutil

    repo, clone = tmp_path / "repo", tmp_path / "clone"
    repo.mkdir()
    env = os.environ | {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([*dvc, "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "shared", str(tmp_path / "remote")], cwd=repo, check=True, env=env)
    shutil.copytree(sim_root, repo / "data")
    version = commit_data(repo)
    subprocess.run(["git", "add", "data.dvc", ".gitignore", ".dvc/config"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "data"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, env=env)
    assert not (clone / "data").exists()
    subprocess.run([*dvc, "pull", "-q"], cwd=clone, check=True, env=env)
    assert data_version(clone / "data.dvc") == version
    files = sorted(p.relative_to(sim_root) for p in sim_root.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(clone / "data") for p in (clone / "data").rglob("*")
                                     if p.is_file())
    assert all(filecmp.cmp(sim_root / f, clone / "data" / f, shallow=False) for f in files)


def test_folder_fingerprint_changes_with_content(tmp_path):
    (tmp_path / "a").write_text("1")
    first = folder_fingerprint(tmp_path)
    (tmp_path / "b").write_text("2")
    assert folder_fingerprint(tmp_path) != first


def test_atomic_dir_keeps_the_previous_folder_on_failure(tmp_path):
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "good.txt").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert [p.name for p in dest.iterdir()] == ["good.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folders left


def test_atomic_files(tmp_path):
    atomic_write_text(tmp_path / "x.txt", "hello")
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    save_npy(tmp_path / "a.npy", array)
    assert np.array_equal(load_npy(tmp_path / "a.npy"), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "x.txt"]


def test_atomic_writes_follow_the_umask_so_a_group_shared_store_stays_readable(tmp_path):
    """mkstemp/mkdtemp create 0600/0700; what is renamed into place takes the mode a plain
    open()/mkdir() would: under umask 002 a group can read (and write) it."""
    import os
    import stat

    from smh_ml.io import atomic_dir, atomic_write_text

    old = os.umask(0o002)
    try:
        path = atomic_write_text(tmp_path / "report.json", "{}")
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "model.onnx").write_bytes(b"x")
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
        assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o775
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "private.json", "{}").stat().st_mode) == 0o600
    finally:
        os.umask(old)
