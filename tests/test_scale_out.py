"""Scale-out: the ci-profile graph with Dagster and MLflow on PostgreSQL and every step on a
Celery worker over Redis, all on 127.0.0.1 (docs/DEPLOY.md).

The services come from Debian's packages (``postgresql``, ``redis-server``; `.ci/run` installs
them when it runs as root); the test starts its own server of each on free ports in a
temporary folder and skips, with the reason, where a binary or the ``[scale]`` extra is missing.
The Dagster instance is ``deploy/dagster.postgres.yaml`` as shipped.
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["imprinted", "pits", "roll-marks", "scratches"]


def _binary(name: str) -> str | None:
    """A service binary on PATH or in Debian's versioned PostgreSQL folder."""
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                      None)


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _requirements() -> str | None:
    """Why the test cannot run here, or None."""
    for module in ("dagster_postgres", "dagster_celery", "psycopg2", "redis"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module} missing: install the [scale] extra (make setup does)"
    for name in ("initdb", "postgres", "redis-server"):
        if _binary(name) is None:
            return f"{name} not found: install Debian's postgresql and redis-server (.ci/run does as root)"
    return None


@pytest.fixture(scope="module")
def postgres(scale_env):
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust authentication) with the databases
    ``dagster`` and ``mlflow``. PostgreSQL refuses to run as root, so as root it runs as the
    ``postgres`` user that Debian's package creates."""
    import psycopg2

    # outside pytest's folder, which only root may enter
    root = Path(tempfile.mkdtemp(prefix="smh-scale-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    made = subprocess.run([*as_user, _binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                           "--no-sync"], capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    port = free_port()
    proc = subprocess.Popen([*as_user, _binary("postgres"), "-D", str(data), "-p", str(port),
                             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                             "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        dsn = {"host": "127.0.0.1", "port": port, "user": "postgres"}
        _wait(lambda: psycopg2.connect(dbname="postgres", **dsn).close() is None, "PostgreSQL")
        conn = psycopg2.connect(dbname="postgres", **dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE dagster")
            cur.execute("CREATE DATABASE mlflow")
        conn.close()
        yield port
    finally:
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url(scale_env):
    import redis

    port = free_port()
    proc = subprocess.Popen([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait(lambda: redis.Redis(host="127.0.0.1", port=port).ping(), "Redis")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def scale_env():
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    yield


def test_the_graph_runs_on_postgres_and_celery_workers(scale_env, postgres, redis_url, sim_root, tmp_path,
                                                       monkeypatch):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    from mlflow import MlflowClient

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    tracking = f"postgresql://postgres@127.0.0.1:{postgres}/mlflow"
    env = os.environ | {
        "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres),
        "DAGSTER_PG_USER": "postgres", "DAGSTER_PG_PASSWORD": "unused", "DAGSTER_PG_DB": "dagster",
        "MLFLOW_TRACKING_URI": tracking, "SMH_MLFLOW_ARTIFACTS": str(tmp_path / "mlflow-artifacts"),
        "SMH_PROFILE": "ci", "SMH_DATA_ROOT": str(sim_root), "SMH_STORAGE_ROOT": str(tmp_path / "artifacts"),
        "SMH_EXECUTOR": "celery", "SMH_CELERY_BROKER": redis_url,
        # the graph's wiring is under test, not the tiny ci model's skill (as in test_pipeline_full)
        "SMH_BASELINE_MARGIN": "-1.0",
        "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true",
        # the worker CLI starts `celery` from PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    celery_yaml = tmp_path / "celery.yaml"
    celery_yaml.write_text(f"execution:\n  config:\n    broker: {redis_url}\n    backend: {redis_url}\n")
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
             "-y", str(celery_yaml), "-n", "scale-test", "--", "--concurrency=1"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pipelines"], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=900)
        (tmp_path / "pipelines.log").write_text(done.stdout + done.stderr)
        seconds = time.perf_counter() - started
        assert done.returncode == 0, (done.stdout[-3000:] + done.stderr[-3000:]
                                      + worker_log.read_text()[-3000:])
    finally:
        _stop(worker)
    print(f"scale-out graph: {seconds:.0f} s")

    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, env[key])
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["classifier", *["gans"] * len(CLASSES), "prepare"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert sorted(r.tags["dagster/partition"] for r in runs if r.job_name == "gans") == CLASSES
        for run in runs:
            events = [r.event_log_entry for r in instance.get_records_for_run(run.run_id, limit=10_000).records]
            steps = {e.dagster_event.step_key: e.dagster_event.pid for e in events
                     if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"}
            # every step was submitted to Celery and ran in the worker, not in the launching process
            submits = [e for e in events if e.user_message.startswith("Submitting celery task")]
            assert steps and {e.step_key for e in submits} == set(steps), (run.job_name, submits, steps)
            launcher = {e.dagster_event.pid for e in submits}
            assert launcher and not launcher & set(steps.values()), (run.job_name, launcher, steps)
        assert "scale-test@" in worker_log.read_text()
    finally:
        instance.dispose()

    client = MlflowClient(tracking_uri=tracking)
    model = os.environ.get("SMH_MODEL_NAME", "smh-defect-classifier")
    champion = client.get_model_version_by_alias(model, "champion")
    run = client.get_run(champion.run_id)
    assert run.data.metrics, "the champion's run carries its metrics"
    assert any(v.version == champion.version for v in client.search_model_versions(f"name='{model}'"))
