"""A line station: decide each capture once the camera has finished writing it (``smh-ml watch``).

Files are found by a maintained watcher (watchdog's observer: inotify on Linux) plus one scan
of the folder at start. A file counts as written when its size and modification time stopped
changing for ``settle_seconds`` (a file renamed into place is stable at once); names that cameras and
copy tools use while writing (dot files, ``*.part``, ``*.tmp``) are never read.

Each decision is one JSON line appended to the results log (path, size, modification time,
label, probabilities, threshold, model version, latency), flushed and synced before the next
capture, so a line PC can tail it and a restart decides only the captures the log does not
hold. A file that cannot be decided gets a line with its ``error`` and the station goes on.
Between captures the model source is asked for its version (a registry alias may have moved):
a new model is loaded first and swapped in whole, so no capture is dropped or decided twice.
``status.json`` beside the log holds throughput and p50/p99 latency, replaced atomically.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from smh_ml.data.captures import is_partial_name
from smh_ml.deploy.engine import Engine, is_capture
from smh_ml.deploy.status_page import Recent
from smh_ml.io import atomic_write_text


class ModelSource(Protocol):
    """Where the station's model comes from: a fixed file, or a registry alias that may move."""

    def version(self) -> str:
        """A cheap check of which model is current (a registry version, or a file's stamp)."""
        ...

    def fetch(self) -> Path:
        """The current model's ONNX file on local disk."""
        ...


@dataclass
class FileSource:
    """A model file on disk; its version is its modification time and size, so a model copied
    over it is picked up."""

    path: Path

    def version(self) -> str:
        info = os.stat(self.path)
        return f"{self.path.name}@{info.st_mtime_ns}-{info.st_size}"

    def fetch(self) -> Path:
        return Path(self.path)


def _key(path: Path | str, size: int, mtime_ns: int) -> tuple[str, int, int]:
    return str(Path(path).resolve()), int(size), int(mtime_ns)


class ResultsLog:
    """The append-only JSON-lines log of decisions, and which captures it already holds."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.decided: set[tuple[str, int, int]] = set()
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.decided.add(_key(row["path"], row["size"], row["mtime_ns"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a power loss: that capture is decided again
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (held open for the run)
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end a line cut by a power loss, so the next one parses

    def holds(self, path: Path, size: int, mtime_ns: int) -> bool:
        return _key(path, size, mtime_ns) in self.decided

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.decided.add(_key(row["path"], row["size"], row["mtime_ns"]))

    def close(self) -> None:
        self._file.close()


@dataclass
class StationStats:
    decided: int = 0
    errors: int = 0
    reloads: int = 0
    reload_errors: deque = field(default_factory=lambda: deque(maxlen=10))
    """The last model loads that failed (the station kept deciding with the model it had)."""
    counts: dict[str, int] = field(default_factory=dict)
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))
    first: float | None = None
    last: float | None = None
    """When the first and the latest capture were decided (captures/s between them: an idle
    line does not read as a slow station)."""

    def count(self, when: float) -> None:
        self.first = when if self.first is None else self.first
        self.last = when

    def to_dict(self, model_version: str) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=float)
        done = self.decided + self.errors
        rate = (done - 1) / (self.last - self.first) if done > 1 and self.last > self.first else None
        return {"decided": self.decided, "errors": self.errors, "counts": dict(sorted(self.counts.items())),
                "model_version": model_version, "reloads": self.reloads,
                "reload_errors": list(self.reload_errors),
                "captures_per_second": None if rate is None else round(rate, 3),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


class Station:
    """Decides the captures that land in ``folder`` (recursively) with the model of ``source``."""

    def __init__(self, folder: Path | str, source: ModelSource, log: Path | str,
                 engine: Callable[[Path], Engine] = Engine, route: Path | str | None = None,
                 settle_seconds: float = 0.5, reload_seconds: float = 5.0,
                 on_decision: Callable[[dict], None] | None = None, review: Path | str | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: no such folder to watch")
        self.source, self.make_engine = source, engine
        self.log = ResultsLog(log)
        self.status_path = self.log.path.with_name("status.json")
        self.route = Path(route) if route is not None else None
        self.review = Path(review) if review is not None else None
        """Where captures with the ``unknown`` verdict are copied for a person to label."""
        self.settle_seconds, self.reload_seconds = settle_seconds, reload_seconds
        self.on_decision = on_decision
        self.version = source.version()
        self.engine = engine(source.fetch())
        self.stats = StationStats()
        self.recent = Recent()
        """The last decisions with their patches, for the status page's heat maps."""
        self._seen: dict[Path, tuple[int, int, float]] = {}
        """Candidates not yet settled: (size, mtime_ns, when that stamp was first seen)."""
        self._events: queue.Queue[Path] = queue.Queue()
        self._last_reload_check = time.monotonic()

    # -- finding files ----------------------------------------------------------------------
    def notice(self, path: Path | str) -> None:
        """A file was created, modified or renamed into place (thread-safe: the observer's)."""
        self._events.put(Path(path))

    def scan(self) -> None:
        """Every capture already in the folder (the ones the log holds are skipped when ready)."""
        for path in sorted(self.folder.rglob("*")):
            if path.is_file():
                self.notice(path)

    def _drain_events(self) -> None:
        while True:
            try:
                path = self._events.get_nowait()
            except queue.Empty:
                return
            if is_capture(path) and not is_partial_name(path) and not self._own_output(path):
                self._seen.setdefault(path, (-1, -1, 0.0))

    def _own_output(self, path: Path) -> bool:
        """What the station writes (its log and status, routed and review copies) and what lies
        in a hidden folder (``.smh-watch/``) are not captures, even inside the watched folder."""
        resolved = path.resolve()
        if resolved in (self.log.path.resolve(), self.status_path.resolve()):
            return True
        try:
            inside = resolved.relative_to(self.folder.resolve()).parts[:-1]
        except ValueError:
            inside = ()
        if any(part.startswith(".") for part in inside):
            return True
        return any(out is not None and out.resolve() in resolved.parents for out in (self.route, self.review))

    def ready(self, now: float | None = None) -> list[tuple[Path, int, int]]:
        """Captures whose size and modification time have not changed for ``settle_seconds``,
        oldest first; vanished files are forgotten."""
        self._drain_events()
        now = time.monotonic() if now is None else now
        done = []
        for path, (size, mtime, since) in list(self._seen.items()):
            try:
                info = os.stat(path)
            except OSError:
                del self._seen[path]
                continue
            stamp = (info.st_size, info.st_mtime_ns)
            if stamp != (size, mtime):
                self._seen[path] = (*stamp, now)
            elif now - since >= self.settle_seconds:
                del self._seen[path]
                if not self.log.holds(path, *stamp):
                    done.append((path, *stamp))
        return sorted(done, key=lambda item: item[2])

    # -- deciding -----------------------------------------------------------------------------
    def maybe_reload(self) -> bool:
        """Swap in the source's model when its version moved (checked every ``reload_seconds``)."""
        now = time.monotonic()
        if now - self._last_reload_check < self.reload_seconds:
            return False
        self._last_reload_check = now
        try:
            version = self.source.version()
        except Exception:  # the registry unreachable for a moment: keep deciding with the model we have
            return False
        if version == self.version:
            return False
        try:  # loaded before the swap: no capture waits on it
            engine = self.make_engine(self.source.fetch())
        except Exception as exc:  # a download cut off, a file still being copied: retried at the next check
            self.stats.reload_errors.append(f"{version}: {exc}")
            return False
        self.engine, self.version = engine, version
        self.stats.reloads += 1
        return True

    def decide(self, ready: list[tuple[Path, int, int]]) -> list[dict]:
        """Decide ``ready`` captures in order, the next one decoded while the model runs on the
        current one (Engine.decide_paths); one log line each, written before the next. A
        capture's latency is the time from its turn to its decision."""
        rows = []
        start = time.perf_counter()
        for (path, size, mtime_ns), prediction in zip(ready, self.engine.decide_paths([p for p, _, _ in ready])):
            rows.append(self._record(path, size, mtime_ns, prediction, (time.perf_counter() - start) * 1e3))
            start = time.perf_counter()
        return rows

    def _record(self, path: Path, size: int, mtime_ns: int, prediction, latency_ms: float) -> dict:
        row: dict = {"path": str(path.resolve()), "size": size, "mtime_ns": mtime_ns,
                     "model_version": self.version, "decided_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "decided_unix": round(time.time(), 3), "latency_ms": round(latency_ms, 2)}
        self.stats.count(row["decided_unix"])
        if prediction.decision is None:
            row["error"] = prediction.error
            self.stats.errors += 1
        else:
            d = prediction.decision
            row |= {"label": d.label, "verdict": d.verdict, "probability": round(d.probability, 6),
                    "patch": d.patch, "threshold": self.engine.threshold, "unknown_score": d.unknown_score,
                    "unknown_threshold": self.engine.unknown_threshold,
                    "defect_probability": [round(p, 6) for p in d.defect_probability]}
            if prediction.note:
                row["note"] = prediction.note
            self.stats.decided += 1
            self.stats.counts[d.verdict] = self.stats.counts.get(d.verdict, 0) + 1
            self.stats.latencies_ms.append(row["latency_ms"])
            if self.route is not None:
                self._route(path, self.route / d.verdict, row, "routed")
            if d.unknown and self.review is not None:
                self._route(path, self.review, row, "review")
        self.log.append(row)
        self.recent.add(row, prediction.patches, self.engine.geometry)
        if self.on_decision is not None:
            self.on_decision(row)
        return row

    def _route(self, path: Path, into: Path, row: dict, key: str) -> None:
        """A copy under ``into`` (ROUTE/<verdict>/, or the review folder), at the capture's path
        inside the watched folder (two folders' same file names stay apart); the copy's path is
        recorded as ``key``, a failed copy as ``<key>_error``, not fatal."""
        try:
            relative = path.resolve().relative_to(self.folder.resolve())
        except ValueError:
            relative = Path(path.name)
        target = into / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            row[key] = str(target)
        except OSError as exc:
            row[f"{key}_error"] = f"{target}: {exc}"

    def status(self) -> dict:
        return self.stats.to_dict(self.version) | {"precision": self.engine.precision, "backend": self.engine.backend}

    def write_status(self) -> dict:
        status = self.status()
        atomic_write_text(self.status_path, json.dumps(status, indent=1) + "\n")
        return status

    def step(self) -> int:
        """One pass: reload if the model moved, decide every ready capture; how many."""
        self.maybe_reload()
        ready = self.ready()
        if ready:
            self.decide(ready)
            self.write_status()
        return len(ready)

    def run(self, stop: threading.Event, poll_seconds: float = 0.1, max_captures: int | None = None,
            idle_exit_seconds: float | None = None) -> dict:
        """Watch until ``stop`` is set (or ``max_captures`` were decided, or nothing arrived for
        ``idle_exit_seconds``); returns the final status."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        station = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory:
                    return
                target = getattr(event, "dest_path", "") or event.src_path
                station.notice(os.fsdecode(target))

        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=True)
        observer.start()
        try:
            self.scan()
            last_work = time.monotonic()
            while not stop.is_set():
                if self.step():
                    last_work = time.monotonic()
                if max_captures is not None and self.stats.decided + self.stats.errors >= max_captures:
                    break
                if idle_exit_seconds is not None and time.monotonic() - last_work > idle_exit_seconds \
                        and not self._seen:
                    break
                stop.wait(poll_seconds)
        finally:
            observer.stop()
            observer.join(timeout=5)
            self.log.close()
        return self.write_status()
