"""Bounded REST serving (`smh-ml serve`): MLflow's scoring server behind a body limit, the
model card's pixel limit checked from the header, several workers answering at once."""

import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import free_port, wait_until_serving
from PIL import Image

from smh_ml.data.patching import Geometry
from smh_ml.deploy.card import ModelCard


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _body(images: list[bytes]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["image"],
                                           "data": [[base64.b64encode(i).decode()] for i in images]}}).encode()


def _post(port: int, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build
    from smh_ml.models.feature_distance import MAX_DIMENSIONS, FeatureDistance
    from smh_ml.tracking.packaging import package_model

    tmp = tmp_path_factory.mktemp("rest")
    # a capture of up to 200 x 200 px was trained on: the card accepts 4x that area
    card = ModelCard("baseline_cnn", ("defect-free", "scratch", "pit"), Geometry(2, 2, 32), max_pixels=4 * 200 * 200,
                     unknown_threshold=0.5)
    module = FeatureDistance(build("baseline_cnn", 3, 32).eval(), 3, MAX_DIMENSIONS, side=32).eval()
    onnx_file = export_onnx(module, tmp / "model.onnx", card)
    folder = package_model(onnx_file, tmp / "package")
    port = free_port()
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    proc = subprocess.Popen([sys.executable, "-m", "smh_ml.cli", "serve", "--model", str(folder), "--port", str(port),
                             "--workers", "2", "--max-body-mb", "0.25"],
                            env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/ping", proc)
    except RuntimeError:
        os.killpg(proc.pid, signal.SIGTERM)
        raise
    yield port, proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def _capture(seed=0, side=120) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.zeros((side, side), np.uint8)
    image[4:-4, 4:-4] = rng.normal(128, 10, (side - 8, side - 8)).clip(40, 220).astype(np.uint8)
    return _png(image)


def test_a_capture_is_decided_with_its_verdict(server):
    port, _ = server
    status, answer = _post(port, _body([_capture(), _capture(1)]))
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == 2 and {r["label"] for r in rows} <= {"defect-free", "scratch", "pit"}
    assert all(r["verdict"] == ("unknown" if r["unknown_score"] >= 0.5 else r["label"]) and r["unknown_score"] >= 0
               for r in rows)
    assert [r["note"] for r in rows] == ["", ""]  # 8-bit grey: nothing converted


def test_a_converted_capture_says_so_as_predict_does(server):
    port, _ = server
    grey = np.asarray(Image.open(io.BytesIO(_capture())))
    colour = io.BytesIO()
    Image.fromarray(np.stack([grey, grey // 2, 255 - grey], -1).astype(np.uint8)).convert("CMYK").save(colour, "JPEG")
    status, answer = _post(port, _body([colour.getvalue()]))
    assert status == 200, answer
    assert answer["predictions"][0]["note"] == "converted to 8-bit grey from mode CMYK"


def test_a_body_over_the_limit_is_refused_before_it_is_read_and_the_server_goes_on(server):
    port, proc = server
    status, answer = _post(port, b"x" * (300 * 1024))
    assert status == 413 and "limit of 262,144 bytes" in answer["message"], answer
    # a body sent without a length (chunked) is not read unbounded
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/invocations", body=iter([b'{"dataframe_split"', b": {}}"]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 411 and b"Content-Length" in answer.read()
    conn.close()
    assert proc.poll() is None and _post(port, _body([_capture()]))[0] == 200


def test_a_capture_far_larger_than_any_trained_on_is_refused_from_its_header(server):
    port, _ = server
    # 1-bit, 3000 x 3000: a few kB on the wire, 9 MP declared (the card allows 160,000)
    buffer = io.BytesIO()
    Image.new("1", (3000, 3000), 1).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 20_000
    status, answer = _post(port, _body([buffer.getvalue()]))
    assert status == 400 and "3000 x 3000 px is more than the 160,000 px" in answer["message"], answer
    assert "refused before decoding" in answer["message"]


def test_two_workers_answer_concurrent_clients(server):
    port, _ = server
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _post(port, _body([_capture(i)])), range(16)))
    assert [status for status, _ in answers] == [200] * 16


def test_predict_refuses_a_huge_capture_file_from_its_header(tmp_path):
    from smh_ml.data.captures import CaptureError
    from smh_ml.deploy import Engine
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build

    card = ModelCard("baseline_cnn", ("defect-free", "scratch"), Geometry(1, 1, 32), max_pixels=10_000)
    engine = Engine(export_onnx(build("baseline_cnn", 2, 32).eval(), tmp_path / "m.onnx", card))
    Image.new("1", (400, 400), 1).save(tmp_path / "big.png")
    with pytest.raises(CaptureError, match="400 x 400 px is more than the 10,000 px"):
        engine.read(tmp_path / "big.png")
    (tmp_path / "ok.png").write_bytes(_capture(side=96))
    assert engine.read(tmp_path / "ok.png").shape == (96, 96)
