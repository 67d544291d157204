"""Data versions with DVC: ``data.dvc`` tracks the capture folder; its md5 is the version.

The md5 is read straight from ``data.dvc`` (no DVC import needed); committing a new
version shells out to the ``dvc`` CLI of this environment (``dvc add`` + ``dvc push``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


class DataVersionError(RuntimeError):
    pass


def data_version(dvc_file: Path | str = "data.dvc") -> str | None:
    """The md5 of the tracked capture folder in ``dvc_file``, or None if it tracks nothing yet."""
    path = Path(dvc_file)
    if not path.exists():
        return None
    try:
        spec = yaml.safe_load(path.read_text()) or {}
        outs = spec.get("outs") or []
    except yaml.YAMLError as exc:
        raise DataVersionError(f"{path}: not a valid .dvc file: {exc}") from None
    if not outs or "md5" not in outs[0]:
        return None
    return str(outs[0]["md5"]).removesuffix(".dir")


def _dvc(args: list[str], cwd: Path) -> str:
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataVersionError(f"dvc {' '.join(args)} failed in {cwd}:\n{proc.stderr.strip()}")
    return proc.stdout


def commit_data(repo: Path | str = ".", target: str = "data", push: bool = True) -> str:
    """``dvc add`` the capture folder (and ``dvc push`` it to the default remote).

    Returns the new data version. Needs a git repository with ``dvc init`` done.
    """
    repo = Path(repo).resolve()
    if not (repo / ".dvc").is_dir():
        raise DataVersionError(f"{repo}: no .dvc folder; run 'dvc init' in the repository first")
    if not (repo / target).is_dir():
        raise DataVersionError(f"{repo / target}: capture folder does not exist")
    _dvc(["add", "--quiet", target], repo)
    if push:
        _dvc(["push", "--quiet", f"{target}.dvc"], repo)
    version = data_version(repo / f"{target}.dvc")
    if version is None:
        raise DataVersionError(f"{repo / target}.dvc has no md5 after dvc add")
    return version


def folder_fingerprint(root: Path | str) -> str:
    """A cheap version for an untracked folder: hash of relative paths, sizes and mtimes."""
    import hashlib

    root = Path(root)
    digest = hashlib.md5()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
