"""Relative default paths resolve against the project root (or SMH_HOME), never the working
folder: runs, artifacts and the registry stay in one place whichever folder a command starts in."""

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
