"""The line station (``smh-ml watch``) fed at camera speed: throughput and latency.

Not a test: it prints figures, with the CPU's features beside them. A feeder thread copies
held-out capture files of a patch set into a watched folder at ``--rate`` captures a second,
each written beside its name and renamed into place (as camera SDKs do); the station decides
them through watchdog's observer with the settle rule, exactly as ``smh-ml watch`` runs. The
figures: captures/s over the run, p50/p99 decision latency, and the end-to-end lag from the
moment a file landed to its log line (settle time included).

    python benchmarks/watch_throughput.py MODEL_DIR PATCH_DIR [--rate 24] [--count 120]
        [--settle 0.2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from smh_ml.deploy import Engine
from smh_ml.deploy.watch import FileSource, Station
from smh_ml.hardware import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("patch_dir", type=Path)
    parser.add_argument("--rate", type=float, default=24.0, help="captures written per second")
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--settle", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    captures = pd.read_csv(args.patch_dir / "captures.csv")
    files = [Path(p) for p in captures.loc[captures["split"] == "test", "path"]]
    files = (files * (args.count // max(len(files), 1) + 1))[: args.count]
    model = args.model_dir / "model.onnx" if args.model_dir.is_dir() else args.model_dir
    landed: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder, log = Path(tmp) / "line", Path(tmp) / "out" / "decisions.jsonl"
        folder.mkdir()
        station = Station(folder, FileSource(model), log, engine=lambda p: Engine(p, threads=args.threads),
                          settle_seconds=args.settle)

        def camera() -> None:
            start = time.perf_counter()
            for i, source in enumerate(files):
                target = folder / f"{i:05d}{source.suffix}"
                staged = folder / f".{target.name}.part"
                shutil.copyfile(source, staged)
                staged.rename(target)
                landed[str(target.resolve())] = time.time()
                time.sleep(max(0.0, start + (i + 1) / args.rate - time.perf_counter()))

        feeder = threading.Thread(target=camera)
        stop = threading.Event()
        begin = time.perf_counter()
        feeder.start()
        status = station.run(stop, poll_seconds=0.02, max_captures=len(files), idle_exit_seconds=30)
        wall = time.perf_counter() - begin
        feeder.join()
        rows = [json.loads(line) for line in log.read_text().splitlines()]
    lag = [row["decided_unix"] - landed[row["path"]] for row in rows if row["path"] in landed]
    print(json.dumps({"hardware": describe(), "model": str(model), "precision": station.engine.precision,
                      "fed_rate": args.rate, "captures": len(rows), "errors": status["errors"],
                      "wall_seconds": round(wall, 1), "captures_per_second_over_run": round(len(rows) / wall, 2),
                      "latency_ms_p50": status["latency_ms_p50"], "latency_ms_p99": status["latency_ms_p99"],
                      "landed_to_logged_s_median": round(statistics.median(lag), 3) if lag else None,
                      "landed_to_logged_s_max": round(max(lag), 3) if lag else None,
                      "labels": status["counts"]}, indent=1))


if __name__ == "__main__":
    main()
