"""REST serving under load: N clients at once, each posting one real capture, against
``smh-ml serve`` (bounded, W workers) and, for comparison, ``mlflow models serve`` (its
defaults). Prints the latency distribution and the server's resident memory.

Not a test: it prints figures.

    python benchmarks/rest_load.py MODEL_DIR CAPTURE [CAPTURE ...] [--clients 50] [--workers 2]

MODEL_DIR is a ``smh-ml train`` output folder (its ``model.onnx`` is packaged as the registry
would package it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the uvicorn workers), MB."""
    total = 0
    for line in subprocess.run(["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True,
                               text=True).stdout.split():
        total += int(line)
    return total / 1024


def _load(command: list[str], port: int, bodies: list[bytes], clients: int) -> dict:
    env = os.environ | {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"server did not start: {' '.join(command)}") from None
                time.sleep(0.5)
        idle = _rss_mb(proc.pid)

        def post(i: int) -> tuple[float, int]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", bodies[i % len(bodies)],
                                             {"Content-Type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as answer:
                answer.read()
                return time.perf_counter() - start, answer.status

        post(0)  # warm: the first request loads lazily
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(post, range(clients)))
        wall = time.perf_counter() - start
        seconds = sorted(r[0] for r in results)
        return {"clients": clients, "ok": sum(r[1] == 200 for r in results), "wall_s": round(wall, 2),
                "median_s": round(statistics.median(seconds), 2), "p90_s": round(seconds[int(0.9 * len(seconds))], 2),
                "max_s": round(seconds[-1], 2), "captures_per_s": round(clients / wall, 1),
                "rss_idle_mb": round(idle), "rss_after_mb": round(_rss_mb(proc.pid))}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    from smh_ml.hardware import describe
    from smh_ml.tracking.packaging import package_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("captures", type=Path, nargs="+")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    bodies = [json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(p.read_bytes())
                                                                              .decode()]]}}).encode()
              for p in args.captures]
    with tempfile.TemporaryDirectory() as tmp:
        folder = package_model(args.model_dir / "model.onnx", Path(tmp) / "package")
        print(f"{args.clients} clients, one capture each ({len(bodies)} distinct); {describe()}")
        port = _port()
        bounded = _load([sys.executable, "-m", "smh_ml.cli", "serve", "--model", str(folder), "--port", str(port),
                         "--workers", str(args.workers)], port, bodies, args.clients)
        print(f"smh-ml serve --workers {args.workers}: {json.dumps(bounded)}", flush=True)
        port = _port()
        plain = _load([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder), "--env-manager", "local",
                       "-h", "127.0.0.1", "-p", str(port)], port, bodies, args.clients)
        print(f"mlflow models serve: {json.dumps(plain)}")


if __name__ == "__main__":
    main()
