import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

from smh_ml.config.presets import get_profile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MAGNETIC_TILE = REPO.parent / "shared" / "datasets" / "magnetic-tile"


@pytest.fixture(scope="session")
def ci_profile():
    return get_profile("ci")


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory):
    """A tiny SIMULATED capture set (ci profile scale), made once per session."""
    from smh_ml.data.simulate import simulate_captures

    root = tmp_path_factory.mktemp("sim") / "captures"
    simulate_captures(root, seed=0, count=40, scale=0.125)
    return root


@pytest.fixture(scope="session")
def mt_root(tmp_path_factory):
    """The real magnetic-tile set imported into the capture convention."""
    if not MAGNETIC_TILE.is_dir():
        pytest.skip(f"real data absent: {MAGNETIC_TILE} not found (needs ../shared beside the repo)")
    from smh_ml.data.importers import import_dataset

    root = tmp_path_factory.mktemp("mt") / "captures"
    import_dataset("magnetic-tile", MAGNETIC_TILE, root)
    return root


def wait_until_serving(url: str, proc, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers; the server's stderr in the error when ``proc`` exits or
    ``timeout`` seconds pass first."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(proc.stderr.read().decode()[-3000:]) from None
            time.sleep(0.5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on loopback (sqlite behind it, artifacts proxied), as a
    shared store of several machines is used; its URI."""
    import signal
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
             "--workers", "1"], env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.stderr = open(root / "server.log", "rb")  # what wait_until_serving shows if it never answers
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/health", proc, timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stderr.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toy_set(n_per_class=32, size=16, seed=0):
    """Three visually distinct classes: plain texture, a bright blob, a dark vertical line."""
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            img = rng.normal(120, 10, (size, size))
            y, x = rng.integers(2, size - 6, 2)
            if label == 1:
                img[y:y + 4, x:x + 4] += 90
            elif label == 2:
                img[:, x:x + 2] -= 90
            arrays.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(arrays), np.array(labels)
