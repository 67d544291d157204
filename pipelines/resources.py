"""Configurable resources: the profile, the capture data (and its DVC version), storage."""


import os
from pathlib import Path

import dagster as dg

from smh_ml.profiles import Profile, get_profile
from smh_ml.versioning import data_version, folder_fingerprint


class ProfileResource(dg.ConfigurableResource):
    """Which named profile (paper, demo, ci, ...) sizes every stage."""

    name: str = "demo"

    def get(self) -> Profile:
        return get_profile(self.name)


class CaptureDataResource(dg.ConfigurableResource):
    """The capture root (DVC-tracked) and, optionally, its declared class set."""

    root: str = "data"
    dvc_file: str = "data.dvc"
    classes: list[str] | None = None

    @property
    def path(self) -> Path:
        return Path(self.root)

    def version(self) -> str:
        """The DVC md5 when data.dvc tracks this root, else a fingerprint of the files."""
        dvc_file = Path(self.dvc_file)
        tracked = dvc_file.exists() and dvc_file.with_suffix("").resolve() == self.path.resolve()
        version = data_version(dvc_file) if tracked else None
        return version or f"fp-{folder_fingerprint(self.path)}"


class StorageResource(dg.ConfigurableResource):
    """One root under which every asset writes its files (atomically)."""

    root: str = "artifacts"

    def path(self, profile: str, *parts: str) -> Path:
        return Path(self.root, profile, *parts)


def default_resources() -> dict:
    return {
        "profile": ProfileResource(name=os.environ.get("SMH_PROFILE", "demo")),
        "captures": CaptureDataResource(root=os.environ.get("SMH_DATA_ROOT", "data")),
        "storage": StorageResource(root=os.environ.get("SMH_STORAGE_ROOT", "artifacts")),
    }
