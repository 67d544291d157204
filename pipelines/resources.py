"""Configurable resources: profile, capture data (DVC), storage, MLflow, quality gates."""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from smh_ml.profiles import Profile, get_profile
from smh_ml.promotion import promotion_decision
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

    def class_folders(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))


class StorageResource(dg.ConfigurableResource):
    """One root under which every asset writes its files (atomically)."""

    root: str = "artifacts"

    def path(self, profile: str, *parts: str) -> Path:
        return Path(self.root, profile, *parts)


class QualityGatesResource(dg.ConfigurableResource):
    """Thresholds of the blocking checks."""

    fid_ceiling: float | None = None
    """Domain FID above which a class's GAN fails its check (None: record only)."""
    accuracy_floor: float = 0.0
    """Held-out image-level accuracy below which the model is not registered."""
    baseline_margin: float = 0.02
    """No model at or below the trivial baseline (always the majority class) + this margin
    passes the accuracy check or becomes champion."""
    parity_tolerance: float = 1e-4
    promotion_margin: float = 0.0
    """A challenger becomes champion when its accuracy >= champion's + margin."""


class MlflowResource(dg.ConfigurableResource):
    """Thin MLflow client: one parent run per Dagster run, nested runs per stage, registry.

    Default backend: sqlite under mlflow/ (MLflow's file store is gone); set
    ``tracking_uri`` to a server (http://...) to share runs and the registry.
    """

    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "smh-defect-recognition"
    model_name: str = "smh-defect-classifier"

    def client(self):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        return MlflowClient(self.tracking_uri)

    def experiment_id(self) -> str:
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = None
        if not self.tracking_uri.startswith(("http://", "https://")):
            location = Path(self.artifact_root).resolve().as_uri()
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # created meanwhile by a parallel step
            return client.get_experiment_by_name(self.experiment).experiment_id

    def parent_run(self, dagster_run_id: str, tags: dict[str, str]) -> str:
        """The MLflow run standing for this Dagster run (created on first use)."""
        client, exp = self.client(), self.experiment_id()
        found = client.search_runs([exp], f"tags.dagster_run_id = '{dagster_run_id}' and tags.role = 'parent'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp, run_name=f"dagster-{dagster_run_id[:8]}",
                                tags={"dagster_run_id": dagster_run_id, "role": "parent", **tags})
        return run.info.run_id

    @contextmanager
    def nested_run(self, context: dg.AssetExecutionContext, name: str, tags: dict[str, str],
                   params: dict | None = None) -> Iterator[str]:
        """A child run of this Dagster run's parent; FINISHED on success, FAILED on error."""
        client = self.client()
        parent = self.parent_run(context.run_id, tags)
        run = client.create_run(self.experiment_id(), run_name=name,
                                tags={"mlflow.parentRunId": parent, "dagster_run_id": context.run_id,
                                      "role": name, **tags})
        run_id = run.info.run_id
        for key, value in (params or {}).items():
            client.log_param(run_id, key, str(value)[:6000])
        try:
            yield run_id
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        client.set_terminated(parent, "FINISHED")

    def register(self, run_id: str, model_dir: Path, accuracy: float, test_set: str, margin: float,
                 tags: dict[str, str], baseline: float | None = None, baseline_margin: float = 0.02,
                 contender: bool = True) -> dict:
        """Log ``model_dir`` to ``run_id`` and register it. A ``contender`` (the best candidate
        of its run) is aliased ``challenger`` and becomes ``champion`` only if it is above the
        trivial ``baseline`` + ``baseline_margin`` and at least as accurate (+ margin) as the
        champion on the same test set; other candidates are registered for the record only.
        The decision and the scores are stored as tags on the new version."""
        from mlflow.exceptions import MlflowException

        import mlflow

        client = self.client()
        client.log_artifacts(run_id, str(model_dir), "model")
        version = mlflow.register_model(f"runs:/{run_id}/model", self.model_name).version
        for key, value in {"test_accuracy": str(accuracy), "test_set_id": test_set, **tags}.items():
            client.set_model_version_tag(self.model_name, version, key, value)
        if not contender:
            outcome = {"promote": False, "reason": "not the best candidate of its run", "version": int(version),
                       "challenger_accuracy": accuracy, "champion_accuracy": None, "champion_version": None}
            client.set_model_version_tag(self.model_name, version, "promotion", json.dumps(outcome))
            return outcome
        client.set_registered_model_alias(self.model_name, "challenger", version)
        try:
            champion = client.get_model_version_by_alias(self.model_name, "champion")
        except MlflowException:
            champion = None
        champion_accuracy = float(champion.tags["test_accuracy"]) if champion else None
        same_set = champion is None or champion.tags.get("test_set_id") == test_set
        outcome = promotion_decision(accuracy, champion_accuracy, margin, same_set, baseline, baseline_margin)
        outcome |= {"version": int(version), "champion_version": int(champion.version) if champion else None}
        if outcome["promote"]:
            client.set_registered_model_alias(self.model_name, "champion", version)
            outcome["champion_version"] = int(version)
        client.set_model_version_tag(self.model_name, version, "promotion", json.dumps(outcome))
        client.log_dict(run_id, outcome, "promotion.json")
        client.log_metric(run_id, "challenger_accuracy", accuracy)
        if champion_accuracy is not None:
            client.log_metric(run_id, "champion_accuracy", champion_accuracy)
        return outcome

    def run_link(self, run_id: str) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"{self.tracking_uri}/#/experiments/{self.experiment_id()}/runs/{run_id}"
        return f"{self.tracking_uri} run {run_id} (open with: mlflow ui --backend-store-uri {self.tracking_uri})"
