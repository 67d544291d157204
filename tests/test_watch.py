"""The line station (smh-ml watch): each capture decided once it is written, bad files named,
restarts that decide only what the log lacks, and a model swapped when it moves."""

import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from smh_ml.cli import app
from smh_ml.data.captures import is_partial_name
from smh_ml.data.patching import Geometry
from smh_ml.deploy.card import ModelCard
from smh_ml.deploy.engine import is_capture
from smh_ml.deploy.watch import FileSource, ResultsLog, Station


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two small exported classifiers of different weights (untrained: the station's
    mechanics, not accuracy, are under test)."""
    import torch

    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build

    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build("baseline_cnn", 2, 32).eval()
        card = ModelCard("baseline_cnn", ("defect-free", "scratch"), Geometry(1, 2, 32))
        paths.append(export_onnx(model, folder / f"model{seed}.onnx", card))
    return paths


def _capture(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(60, 200, (48, 96), dtype=np.uint8)).save(path)
    return path


def _lines(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _station(folder, model, log, **kwargs):
    return Station(folder, FileSource(model), log, settle_seconds=kwargs.pop("settle", 0.2), **kwargs)


def _settle(station, expect, timeout=60.0, grace=0.5):
    """Step the station until `expect` captures are decided (a reload from the registry can take
    seconds on a slow machine), then `grace` seconds more, so that a capture decided twice shows."""
    end = time.monotonic() + timeout
    decided = 0
    while decided < expect and time.monotonic() < end:
        decided += station.step()
        time.sleep(0.05)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        decided += station.step()
        time.sleep(0.05)
    return decided


def test_capture_names_skip_masks_and_hidden_files_and_the_station_waits_for_partial_ones(tmp_path):
    assert is_capture(tmp_path / "a.png") and is_capture(tmp_path / "b.JPG")
    assert not any(is_capture(tmp_path / n) for n in ("a.mask.png", ".a.png"))
    # any other file is decided or refused with its reason, not passed over: a partial name
    # too (predict refuses it as still being written; the station waits for its rename)
    assert is_capture(tmp_path / "a.txt") and is_capture(tmp_path / "a.gif") and is_capture(tmp_path / "a.tmp")
    partial = ("a.png.part", "a.tmp", "a.png~", "a.PART")
    assert all(is_partial_name(tmp_path / n) for n in partial)
    assert not any(is_partial_name(tmp_path / n) for n in ("a.png", "a.tiff", "part.png"))


def test_a_bad_file_is_named_and_the_station_goes_on_then_a_restart_decides_only_new_captures(two_models, tmp_path):
    folder, log = tmp_path / "line", tmp_path / "out" / "decisions.jsonl"
    folder.mkdir()
    _capture(folder / "a.png")
    (folder / "broken.png").write_bytes(b"not an image at all")
    station = _station(folder, two_models[0], log)
    station.scan()
    assert _settle(station, 2) == 2
    station.log.close()
    rows = {os.path.basename(r["path"]): r for r in _lines(log)}
    assert rows["a.png"]["label"] in ("defect-free", "scratch") and rows["a.png"]["model_version"]
    assert "broken.png" in rows["broken.png"]["error"] and "label" not in rows["broken.png"]
    assert {"size", "mtime_ns", "latency_ms", "threshold", "defect_probability"} <= set(rows["a.png"])
    status = json.loads((log.parent / "status.json").read_text())
    assert status["decided"] == 1 and status["errors"] == 1 and status["latency_ms_p50"] is not None
    # restart: what the log holds is not decided again; a new capture and a rewritten one are
    _capture(folder / "b.png", seed=1)
    again = _station(folder, two_models[0], log)
    again.scan()
    assert _settle(again, 1) == 1
    _capture(folder / "a.png", seed=2)  # the camera reused a name: new content, a new capture
    again.notice(folder / "a.png")
    assert _settle(again, 1) == 1
    again.log.close()
    names = [os.path.basename(r["path"]) for r in _lines(log)]
    assert names == ["a.png", "broken.png", "b.png", "a.png"]


def test_a_cut_last_line_is_decided_again_not_fatal(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_text(json.dumps({"path": str(tmp_path / "a.png"), "size": 3, "mtime_ns": 4}) + "\n{\"path\": ")
    held = ResultsLog(log)
    assert held.holds(tmp_path / "a.png", 3, 4) and len(held.decided) == 1
    held.append({"path": str(tmp_path / "b.png"), "size": 5, "mtime_ns": 6})
    held.close()
    # the cut line was ended, so the next line parses and its capture is not decided again
    assert ResultsLog(log).holds(tmp_path / "b.png", 5, 6)


def test_a_model_that_fails_to_load_is_retried_while_the_old_one_decides(two_models, tmp_path):
    folder, current = tmp_path / "line", tmp_path / "current.onnx"
    folder.mkdir()
    shutil.copyfile(two_models[0], current)
    station = _station(folder, current, tmp_path / "decisions.jsonl", reload_seconds=0.0)
    old = station.version
    current.write_bytes(b"half a model")  # a copy caught mid-write
    assert not station.maybe_reload() and station.version == old and station.status()["reload_errors"]
    _capture(folder / "a.png")
    station.notice(folder / "a.png")
    assert _settle(station, 1) == 1 and "label" in _lines(tmp_path / "decisions.jsonl")[0]
    shutil.copyfile(two_models[1], current)
    assert station.maybe_reload() and station.version != old
    station.log.close()


def test_a_model_moved_under_the_station_is_swapped_between_captures(two_models, tmp_path):
    folder, log = tmp_path / "line", tmp_path / "decisions.jsonl"
    folder.mkdir()
    current = tmp_path / "current.onnx"
    shutil.copy2(two_models[0], current)
    station = _station(folder, current, log, reload_seconds=0.0)
    _capture(folder / "a.png")
    station.notice(folder / "a.png")
    assert _settle(station, 1) == 1
    staged = tmp_path / ".current.onnx.new"
    shutil.copyfile(two_models[1], staged)
    os.replace(staged, current)  # a new champion renamed into place
    _capture(folder / "b.png", seed=1)
    station.notice(folder / "b.png")
    assert _settle(station, 1) == 1
    station.log.close()
    first, second = _lines(log)
    assert first["model_version"] != second["model_version"] and station.stats.reloads == 1


def test_watch_decides_a_slowly_written_file_exactly_once(two_models, tmp_path):
    """Through the CLI and watchdog's observer: a capture written in pieces over a second is
    read only once complete, and routed to its verdict's folder."""
    folder, log, route = tmp_path / "line", tmp_path / "out" / "decisions.jsonl", tmp_path / "routed"
    folder.mkdir()
    source = tmp_path / "source.png"
    _capture(source)
    data = source.read_bytes()

    def camera():
        time.sleep(1.0)  # the station is watching by then
        with open(folder / "slow.png", "wb") as out:
            for i in range(0, len(data), max(1, len(data) // 8)):
                out.write(data[i:i + max(1, len(data) // 8)])
                out.flush()
                time.sleep(0.15)

    writer = threading.Thread(target=camera)
    writer.start()
    result = CliRunner().invoke(app, ["watch", str(folder), "--model", str(two_models[0]), "--log", str(log),
                                      "--route", str(route), "--settle", "0.5", "--max-captures", "1",
                                      "--idle-exit", "20", "--status-port", "-1"])
    writer.join()
    assert result.exit_code == 0, result.output
    rows = _lines(log)
    assert len(rows) == 1 and "error" not in rows[0] and rows[0]["size"] == len(data)
    assert (route / rows[0]["label"] / "slow.png").read_bytes() == data
    assert "1 decided, 0 failed" in result.output


def test_the_status_page_shows_the_decisions_with_their_heat_maps(two_models, tmp_path):
    import urllib.error
    import urllib.request

    from smh_ml.deploy.status_page import StatusPage

    folder = tmp_path / "line"
    folder.mkdir()
    station = _station(folder, two_models[0], tmp_path / "decisions.jsonl")
    from smh_ml.cli import _draw_heatmap

    page = StatusPage(station.status, station.recent, _draw_heatmap).start()
    try:
        empty = urllib.request.urlopen(page.url, timeout=10).read().decode()
        assert "No capture decided yet" in empty
        _capture(folder / "a<b>.png")
        (folder / "broken.png").write_bytes(b"nope")
        station.scan()
        assert _settle(station, 2) == 2
        html = urllib.request.urlopen(page.url, timeout=10).read().decode()
        assert "a&lt;b&gt;.png" in html and "a<b>.png" not in html  # file names are escaped
        assert html.count("data-decision=") == 2 and "error" in html and "/heatmap/1.png" in html
        png = urllib.request.urlopen(page.url + "heatmap/1.png", timeout=30).read()
        assert png.startswith(b"\x89PNG")
        status = json.loads(urllib.request.urlopen(page.url + "status.json", timeout=10).read())
        assert status["decided"] == 1 and status["errors"] == 1
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(page.url + "heatmap/2.png", timeout=10)  # the broken file has none
    finally:
        page.stop()
        station.log.close()


def test_the_station_follows_a_registry_alias_when_it_moves(tmp_path, monkeypatch):
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.tracking.packaging import package_model
    from smh_ml.tracking.tracker import RegistrySource, Tracker

    monkeypatch.setenv("SMH_MODEL_CACHE", str(tmp_path / "cache"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, str(tmp_path / "arts"), "e", "m")
    card = ModelCard("baseline_cnn", ("defect-free", "scratch"), Geometry(1, 2, 32))
    packages = [package_model(export_onnx(build("baseline_cnn", 2, 32).eval(), tmp_path / f"m{i}.onnx", card),
                              tmp_path / f"pkg{i}") for i in range(2)]
    runs = [tracker.client().create_run(tracker.experiment_id()).info.run_id for _ in range(2)]
    assert tracker.register(runs[0], packages[0], 0.6, "t1", 0.0, {})["promote"]
    folder = tmp_path / "line"
    folder.mkdir()
    station = Station(folder, RegistrySource("models:/m@champion", uri), tmp_path / "decisions.jsonl",
                      settle_seconds=0.2, reload_seconds=0.0)
    assert station.version == "m/1" and not station.maybe_reload()
    _capture(folder / "a.png")
    station.notice(folder / "a.png")
    assert _settle(station, 1) == 1
    assert tracker.register(runs[1], packages[1], 1.0, "t1", 0.0, {})["promote"]  # champion -> version 2
    _capture(folder / "b.png", seed=1)
    station.notice(folder / "b.png")
    assert _settle(station, 1) == 1
    station.log.close()
    assert [row["model_version"] for row in _lines(tmp_path / "decisions.jsonl")] == ["m/1", "m/2"]
    assert station.stats.reloads == 1


def test_unknown_captures_get_the_unknown_verdict_and_a_copy_for_review(tmp_path):
    """A model whose unknown threshold every capture reaches: each decision keeps its nearest
    known class as `label`, its verdict is `unknown`, and the capture is copied for review
    (the copies are not decided again)."""
    import torch

    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.models.feature_distance import MAX_DIMENSIONS, FeatureDistance

    torch.manual_seed(0)
    card = ModelCard("baseline_cnn", ("defect-free", "scratch", "pit"), Geometry(1, 2, 32), unknown_threshold=0.0)
    module = FeatureDistance(build("baseline_cnn", 3, 32).eval(), 3, MAX_DIMENSIONS, side=32).eval()
    model = export_onnx(module, tmp_path / "m.onnx", card)
    folder, review = tmp_path / "line", tmp_path / "line" / "review"
    (folder / "shift1").mkdir(parents=True)
    _capture(folder / "shift1" / "a.png")
    station = _station(folder, model, tmp_path / "decisions.jsonl", review=review)
    station.scan()
    assert _settle(station, 1) == 1
    station.log.close()
    row = _lines(tmp_path / "decisions.jsonl")[0]
    assert row["verdict"] == "unknown" and row["label"] in card.classes and row["unknown_threshold"] == 0.0
    assert row["review"] == str(review / "shift1" / "a.png") and (review / "shift1" / "a.png").is_file()
    assert station.status()["counts"] == {"unknown": 1}
    station.scan()  # the review copy lies inside the watched folder: not a capture to decide
    assert _settle(station, 0, grace=0.5) == 0
