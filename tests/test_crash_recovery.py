"""kill -9 at a few points: what a killed writer leaves is never mistaken for a result, the
next writer sweeps it, a replaced folder is never absent, and runs left RUNNING/STARTED by a
killed process are marked failed."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from smh_ml.io import atomic_dir, exchange, pid_alive, scratch_dir, sweep_leftovers
from smh_ml.tracking.tracker import Tracker


def _spawn(code: str, ready: Path, *args: str) -> subprocess.Popen:
    """A Python child that runs ``code`` and touches ``ready`` when it reached the point to kill it."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(ready), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child ended early: {proc.stdout.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("child never got ready")
        time.sleep(0.05)
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


WRITER = """
import sys, time
from pathlib import Path
from smh_ml.io import atomic_dir, atomic_write_text
ready, dest, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
if point == "file":
    import os
    def stall(*a):  # killed between writing the temp file and renaming it
        ready.touch(); time.sleep(600)
    os.replace = stall
    atomic_write_text(dest / "report.json", "new")
with atomic_dir(dest) as tmp:
    (tmp / "part").write_text("half")
    if point == "inside":
        ready.touch(); time.sleep(600)
"""


@pytest.mark.parametrize("point", ["inside", "file"])
def test_a_killed_writer_leaves_the_old_result_and_its_leftovers_are_swept(tmp_path, point):
    dest = tmp_path / "patch_sets"
    with atomic_dir(dest) as tmp:
        (tmp / "report.json").write_text("old")
    _kill9(_spawn(WRITER, tmp_path / "ready", str(dest), point))
    assert (dest / "report.json").read_text() == "old"  # the previous good result, untouched
    assert not (dest / "part").exists()
    leftovers = [p for p in (tmp_path.iterdir() if point == "inside" else dest.iterdir()) if p.name.startswith(".")]
    assert leftovers, "the kill should have left a temporary behind"
    target = dest if point == "inside" else dest / "report.json"
    assert sorted(sweep_leftovers(target)) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    with atomic_dir(dest) as tmp:  # the next run succeeds
        (tmp / "report.json").write_text("next")
    assert (dest / "report.json").read_text() == "next"


def test_leftovers_of_a_live_writer_are_kept(tmp_path):
    dest = tmp_path / "out"
    with scratch_dir(dest) as scratch:
        assert pid_alive(os.getpid())
        assert sweep_leftovers(dest) == []
        assert scratch.exists()
    assert not scratch.exists()


def test_a_replaced_folder_is_never_absent(tmp_path):
    dest = tmp_path / "model"
    with atomic_dir(dest) as tmp:
        (tmp / "v").write_text("0")
    absent, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if not dest.exists():
                absent.append(time.monotonic())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(1, 200):
            with atomic_dir(dest) as tmp:
                (tmp / "v").write_text(str(i))
    finally:
        stop.set()
        watcher.join()
    assert (dest / "v").read_text() == "199"
    (tmp_path / "a").mkdir()
    assert exchange(tmp_path / "a", dest), "this system should swap atomically"
    assert absent == []


RUNNER = """
import sys, time
from pathlib import Path
from smh_ml.tracking.tracker import Tracker
ready, uri, root = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
tracker = Tracker(uri=uri, artifact_root=root)
with tracker.active_run("train", {"profile": "ci"}):
    ready.touch()
    time.sleep(600)
"""


def test_an_mlflow_run_of_a_killed_process_is_marked_failed(tmp_path):
    uri, root = f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts")
    _kill9(_spawn(RUNNER, tmp_path / "ready", uri, root))
    tracker = Tracker(uri=uri, artifact_root=root)
    client = tracker.client()
    [run] = client.search_runs([tracker.experiment_id()])
    assert run.info.status == "RUNNING"
    assert tracker.fail_stale_runs() == [run.info.run_id]
    assert client.get_run(run.info.run_id).info.status == "FAILED"
    assert tracker.fail_stale_runs() == []  # nothing left to fail; live runs are never touched


DAGSTER_RUN = """
import sys, time
from pathlib import Path
import dagster as dg
ready = Path(sys.argv[1])

@dg.op
def slow():
    ready.touch()
    time.sleep(600)

@dg.job(executor_def=dg.in_process_executor)
def stalls():
    slow()

if __name__ == "__main__":
    instance = dg.DagsterInstance.get()
    dg.execute_job(dg.reconstructable(stalls), instance=instance)
"""


def test_a_dagster_run_of_a_killed_process_is_marked_failed(tmp_path, monkeypatch):
    from pipelines.recovery import dead_runs, recover, run_worker_pid

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    script = tmp_path / "stalls.py"
    script.write_text(textwrap.dedent(DAGSTER_RUN))
    ready = tmp_path / "ready"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, str(script), str(ready)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "the run never started its op"
        time.sleep(0.1)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        assert run_worker_pid(instance, run.run_id) == proc.pid
        assert dead_runs(instance) == []  # alive: left alone
        _kill9(proc)
        assert [r.run_id for r in dead_runs(instance)] == [run.run_id]
        assert recover(instance) == {"dagster": [run.run_id], "mlflow": []}
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert dead_runs(instance) == []


REGISTRAR = """
import sys, time
from pathlib import Path
from mlflow import MlflowClient
from smh_ml.tracking.tracker import Tracker
ready, uri, root, package, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5]
real = MlflowClient.set_registered_model_alias
def stall(self, name, alias, version):
    if alias == point:  # killed inside the promotion's critical section, before this alias moves
        ready.touch(); time.sleep(600)
    return real(self, name, alias, version)
MlflowClient.set_registered_model_alias = stall
tracker = Tracker(uri, root, "e", "m")
run = tracker.client().create_run(tracker.experiment_id()).info.run_id
tracker.register(run, package, 0.99, "t1", 0.0, {})
"""


@pytest.mark.parametrize("point", ["challenger", "champion"])
def test_a_registration_killed_midway_leaves_the_champion_serving_and_the_next_one_promotes(tmp_path, point):
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.tracking.packaging import package_model
    from smh_ml.tracking.tracker import resolve_model

    uri, root = f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts")
    card = ModelCard("baseline_cnn", ("defect-free", "scratch"), Geometry(1, 2, 32))
    packages = [package_model(export_onnx(build("baseline_cnn", 2, 32).eval(), tmp_path / f"m{i}.onnx", card),
                              tmp_path / f"pkg{i}") for i in range(3)]
    tracker = Tracker(uri, root, "e", "m")
    runs = [tracker.client().create_run(tracker.experiment_id()).info.run_id for _ in range(2)]
    assert tracker.register(runs[0], packages[0], 0.6, "t1", 0.0, {})["version"] == 1
    _kill9(_spawn(REGISTRAR, tmp_path / "ready", uri, root, str(packages[1]), point))
    client = tracker.client()
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"  # still the old champion
    local = resolve_model("models:/m@champion", uri, cache=tmp_path / "cache")
    assert local.read_bytes() == (packages[0] / "data" / "model.onnx").read_bytes()
    # the promotion lock the killed process held does not block the next registration
    outcome = tracker.register(runs[1], packages[2], 0.9, "t1", 0.0, {})
    assert outcome["promote"]
    assert str(client.get_model_version_by_alias("m", "champion").version) == str(outcome["version"])
