"""Relative default paths resolve against the project root (or SMH_HOME), never the working
folder: runs, artifacts and the registry stay in one place whichever folder a command starts in."""

import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest
from conftest import REPO

from smh_ml.paths import anchored, anchored_uri, project_root


def test_relative_paths_and_sqlite_stores_are_anchored(tmp_path, monkeypatch):
    monkeypatch.setenv("SMH_HOME", str(tmp_path / "home"))
    assert project_root() == (tmp_path / "home").resolve()
    assert anchored("artifacts") == project_root() / "artifacts" and anchored("/abs/x").as_posix() == "/abs/x"
    assert anchored_uri("sqlite:///mlflow/mlflow.db") == f"sqlite:///{project_root()}/mlflow/mlflow.db"
    for kept in ("sqlite:////abs/mlflow.db", "http://mlflow:5000", "postgresql://u@h/db", "s3://bucket/a",
                 "file:///abs/artifacts"):
        assert anchored_uri(kept) == kept
    monkeypatch.delenv("SMH_HOME")
    assert (project_root() / "pyproject.toml").is_file()  # the source checkout the tests run from


def test_the_pipeline_and_the_tracker_write_nothing_in_the_working_folder(tmp_path, monkeypatch):
    from pipelines.definitions import default_resources
    from smh_ml.tracking.tracker import Tracker

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("SMH_HOME", str(home))
    for name in ("SMH_DATA_ROOT", "SMH_STORAGE_ROOT", "SMH_MLFLOW_ARTIFACTS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    resources = default_resources()
    assert resources["storage"].root == str(home.resolve() / "artifacts")
    assert resources["captures"].root == str(home.resolve() / "data")
    assert resources["mlflow"].artifact_root == str(home.resolve() / "mlflow" / "artifacts")
    tracker = resources["mlflow"].tracker()
    run = tracker.client().create_run(tracker.experiment_id()).info.run_id
    tracker.log_dict(run, {"a": 1}, "x.json")
    assert (home / "mlflow" / "mlflow.db").is_file() and list((home / "mlflow" / "artifacts").rglob("x.json"))
    relative = Tracker("sqlite:///mlflow/other.db", "mlflow/artifacts")
    assert relative.uri == f"sqlite:///{home.resolve()}/mlflow/other.db"
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
@pytest.mark.e2e
def test_the_whole_graph_run_from_another_folder_writes_nothing_there(sim_root, tmp_path):
    """``python -m pipelines`` with the project's own dagster.yaml, started in an empty folder:
    Dagster's runs land in DAGSTER_HOME, artifacts and the registry under SMH_HOME."""
    home, project, elsewhere = tmp_path / "dagster_home", tmp_path / "project", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMH_", "MLFLOW_TRACKING", "DAGSTER_"))}
    env |= {"DAGSTER_HOME": str(home), "SMH_HOME": str(project), "SMH_PROFILE": "ci",
            "SMH_DATA_ROOT": str(sim_root), "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
            # the graph's wiring is under test, not the tiny ci model's skill (as in test_pipeline_full)
            "SMH_BASELINE_MARGIN": "-1.0"}
    done = subprocess.run([sys.executable, "-m", "pipelines"], env=env, cwd=elsewhere, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(elsewhere.iterdir()) == []
    assert (home / "history" / "runs.db").is_file() and (home / "storage").is_dir()
    assert (project / "artifacts" / "ci").is_dir() and (project / "mlflow" / "mlflow.db").is_file()
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        instance.dispose()
