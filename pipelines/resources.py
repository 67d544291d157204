"""Configurable resources: profile, capture data (DVC), storage, MLflow, quality gates."""

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from smh_ml.config.overrides import apply_settings
from smh_ml.config.presets import get_profile
from smh_ml.config.schema import GanConfig, Profile
from smh_ml.data.datasets import PatchSet, load_patch_set
from smh_ml.data.recipe import profile_for_folder
from smh_ml.data.versioning import data_version, folder_fingerprint
from smh_ml.tracking.tracker import (
    DEFAULT_ARTIFACT_ROOT,
    DEFAULT_EXPERIMENT,
    DEFAULT_MODEL_NAME,
    DEFAULT_TRACKING_URI,
    DEFAULT_UI_URL,
    Tracker,
)


class ProfileResource(dg.ConfigurableResource):
    """Which named profile (paper, demo, ci, ...) sizes every stage, with ``smh-ml --set``
    style overrides. Set in the Launchpad under ``resources: profile: config:``; the
    environment (``SMH_PROFILE``, ``SMH_SETTINGS``) gives the defaults. A variant's name
    records its overrides (``demo+train.steps=600``), so its artifacts and runs stay apart."""

    name: str = "auto"
    settings: list[str] = []
    """``section.key=value`` strings, values in JSON (``train.steps=600``)."""

    def get(self) -> Profile:
        """The profile as named: for ``auto``, the placeholder that the ``patch_sets`` asset
        resolves from the measured captures (smh_ml.data.recipe)."""
        return apply_settings(get_profile(self.name), self.settings)

    def resolved(self, storage: "StorageResource") -> Profile:
        """What the assets after ``patch_sets`` run under: for ``auto``, the profile recorded
        with the patch sets; a named profile as it is."""
        prof = self.get()
        return profile_for_folder(prof, storage.store(prof.name).patch_dir)


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

    def class_folders(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))


GAN_KIND = "sdg"
"""The GAN the pipeline trains per defect class (the paper's SDG-GAN)."""


@dataclass(frozen=True)
class ProfileStore:
    """One profile's artifacts under the storage root: where each asset writes, and the
    readers of what the assets before it wrote."""

    root: Path

    @property
    def patch_dir(self) -> Path:
        return self.root / "patch_sets"

    def patch_set(self) -> PatchSet:
        return load_patch_set(self.patch_dir)

    @property
    def domain_extractor_dir(self) -> Path:
        return self.root / "domain_extractor"

    @property
    def gan_dir(self) -> Path:
        return self.root / "gans" / GAN_KIND

    @property
    def training_set_dir(self) -> Path:
        return self.root / "training_set"

    @property
    def classifier_dir(self) -> Path:
        return self.root / "classifier"

    def candidate_dir(self, arch: str) -> Path:
        return self.classifier_dir / arch

    def candidate_patch_set(self, key: str) -> PatchSet:
        """The patch set candidate ``key`` learnt from (a close call's other geometry lies in
        the patch folder's ``alternate/``), from its report."""
        return self.candidate_sets([key])[key][0]

    def candidate_sets(self, keys: list[str]) -> dict[str, tuple[PatchSet, tuple]]:
        """For each candidate, its patch set and held-out test patches
        (smh_ml.training.loop.test_patches), each patch folder read and cut once."""
        from smh_ml.training.loop import test_patches
        from smh_ml.workflows.classifier import ClassifierReport

        folders = {key: ClassifierReport.load(self.candidate_dir(key)).patch_folder for key in keys}
        loaded = {}
        for folder in set(folders.values()):
            patch_set = load_patch_set(self.patch_dir / folder)
            loaded[folder] = (patch_set, test_patches(patch_set))
        return {key: loaded[folder] for key, folder in folders.items()}

    @property
    def test_report_dir(self) -> Path:
        return self.root / "test_report"


class StorageResource(dg.ConfigurableResource):
    """One root under which every asset writes its files (atomically)."""

    root: str = "artifacts"

    def path(self, profile: str, *parts: str) -> Path:
        return Path(self.root, profile, *parts)

    def store(self, profile: str) -> ProfileStore:
        """The typed handle to ``profile``'s artifacts."""
        return ProfileStore(Path(self.root, profile))


class QualityGatesResource(dg.ConfigurableResource):
    """Thresholds of the blocking checks."""

    fid_ceiling: float | None = None
    """Domain FID above which a class's GAN fails its check and its synthetic set is refused
    (None: the profile's ``gan.fid_ceiling``). It overrides the profile's value without renaming
    the profile, so the artifacts stay where they are."""
    accuracy_floor: float = 0.0
    """Held-out image-level accuracy below which the model is not registered."""
    baseline_margin: float = 0.02
    """No model at or below the trivial baseline (always the majority class) + this margin
    passes the accuracy check or becomes champion."""
    parity_tolerance: float = 1e-4
    promotion_margin: float = 0.0

    def gan_config(self, profile: Profile) -> GanConfig:
        """``profile``'s GAN section with the one FID ceiling the gate and the check both read."""
        if self.fid_ceiling is None:
            return profile.gan
        return dataclasses.replace(profile.gan, fid_ceiling=self.fid_ceiling)
    """A challenger becomes champion when its accuracy >= champion's + margin."""


class MlflowResource(dg.ConfigurableResource):
    """Where runs and the registry live; every MLflow call is in ``smh_ml.tracking``.

    Default backend: sqlite under mlflow/ (MLflow's file store is gone); set
    ``tracking_uri`` to a server (http://...) to share runs and the registry.
    """

    tracking_uri: str = DEFAULT_TRACKING_URI
    artifact_root: str = DEFAULT_ARTIFACT_ROOT
    experiment: str = DEFAULT_EXPERIMENT
    model_name: str = DEFAULT_MODEL_NAME
    ui_url: str = DEFAULT_UI_URL
    """The MLflow UI that run links open (a local store: ``mlflow ui`` on its default port)."""

    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.artifact_root, self.experiment, self.model_name, self.ui_url)

    @contextmanager
    def nested_run(self, context: dg.AssetExecutionContext, name: str, tags: dict[str, str],
                   params: dict | None = None) -> Iterator[str]:
        """A child run of this Dagster run's parent run; FINISHED on success, FAILED on error."""
        with self.tracker().nested_run(context.run_id, name, tags, params) as run_id:
            yield run_id
