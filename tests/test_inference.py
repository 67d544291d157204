"""Deployment on real magnetic-tile captures: predict (CLI), the int8 gate, REST serving."""

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, wait_until_serving
from typer.testing import CliRunner

from smh_ml.cli import app
from smh_ml.config.overrides import with_overrides
from smh_ml.config.presets import get_profile
from smh_ml.data.patching import Geometry
from smh_ml.decision import decide
from smh_ml.deploy.card import ModelCard

pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def mt_model(mt_root, tmp_path_factory):
    """A small Inception-CNN trained briefly on real magnetic-tile patches (ci profile), exported."""
    from smh_ml.data.captures import load_manifest
    from smh_ml.data.datasets import build_patch_set
    from smh_ml.export.onnx import export_onnx
    from smh_ml.training.loop import class_names, train_final

    manifest = load_manifest(mt_root)
    manifest = manifest.groupby("label", group_keys=False).head(30).reset_index(drop=True)
    # enough training to beat a constant answer (1/6 on this balanced test set) clearly, in fp32 on
    # every CPU: 150 steps reached 28% under bf16 autocast (a CPU with AMX) and in fp32 on an AMD
    # EPYC, a model too close to constant for the int8 gate's test to tell a broken calibration
    # from a good one
    profile = with_overrides(get_profile("ci"), {"train.steps": 300, "train.batch_size": 32,
                                                 "train.precision": "fp32"})
    patch_set = build_patch_set(manifest, profile)
    names = class_names(set(patch_set.captures["label"]), profile.clean_class)
    train = patch_set.index[(patch_set.index["split"] == "train") & patch_set.index["usable"]]
    fitted = train_final(patch_set.patches[train["patch_index"].to_numpy()], train, names, profile.train,
                         patch_set.geometry.patch)
    folder = tmp_path_factory.mktemp("mt-model")
    path = export_onnx(fitted.model, folder / "model.onnx", ModelCard("baseline_cnn", tuple(names), patch_set.geometry))
    return fitted.model.eval(), path, patch_set, names


def _test_rows(patch_set, per_class=1):
    test = patch_set.captures[patch_set.captures["split"] == "test"]
    return test.groupby("label").head(per_class)


def test_predict_on_real_captures_gives_algorithm_1(mt_model, tmp_path):
    from smh_ml.training.loop import predict_proba

    model, onnx_path, patch_set, names = mt_model
    rows = _test_rows(patch_set, per_class=2)
    result = CliRunner().invoke(app, ["predict", *rows["path"], "--model", str(onnx_path), "--json",
                                      "--heatmap", str(tmp_path / "heat")])
    assert result.exit_code == 0, result.output
    out = {r["path"]: r for r in json.loads(result.stdout)}
    assert len(out) == len(rows)
    for _, capture in rows.iterrows():
        # the patches the training pipeline cut from this capture, scored by the torch model
        idx = patch_set.index[patch_set.index["capture_id"] == capture["capture_id"]].sort_values("patch_index")
        probs = predict_proba(model, patch_set.patches[idx["patch_index"].to_numpy()])
        label, patch = decide(probs, 0)
        got = out[str(capture["path"])]
        assert got["label"] == names[label] and got["patch"] == patch
        expected_p = probs[:, 0].min() if patch is None else probs[patch, label]
        assert got["probability"] == pytest.approx(float(expected_p), abs=1e-4)
        assert np.allclose(got["defect_probability"], 1 - probs[:, 0], atol=1e-4)
        png = tmp_path / "heat" / f"{capture['path'].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"


def test_openvino_runs_the_same_onnx_file_to_the_same_decisions(mt_model, tmp_path):
    """The optional backend: fp32 on OpenVINO gives onnxruntime's probabilities and decisions on
    real captures; bf16 stays within a bfloat16 rounding of them; predict takes --backend."""
    from smh_ml.deploy import Engine

    _, onnx_path, patch_set, _ = mt_model
    rows = _test_rows(patch_set, per_class=2)
    engines = {b: Engine(onnx_path, threads=2, backend=b) for b in ("onnxruntime", "openvino", "openvino-bf16")}
    for path in rows["path"]:
        patches = engines["onnxruntime"].patches(engines["onnxruntime"].read(path))
        probs = {b: e.probabilities(patches) for b, e in engines.items()}
        assert np.abs(probs["openvino"] - probs["onnxruntime"]).max() < 1e-4
        assert np.abs(probs["openvino-bf16"] - probs["onnxruntime"]).max() < 0.05  # 8 bits of mantissa
    result = CliRunner().invoke(app, ["predict", *rows["path"], "--model", str(onnx_path), "--json",
                                      "--backend", "openvino"])
    assert result.exit_code == 0, result.output
    default = CliRunner().invoke(app, ["predict", *rows["path"], "--model", str(onnx_path), "--json"])
    assert [r["label"] for r in json.loads(result.stdout)] == [r["label"] for r in json.loads(default.stdout)]
    wrong = CliRunner().invoke(app, ["predict", rows["path"].iloc[0], "--model", str(onnx_path), "--backend", "tpu"])
    assert wrong.exit_code == 1 and "backend 'tpu'" in wrong.output


def test_predict_reports_a_bad_file_and_decides_the_rest(mt_model, tmp_path):
    _, onnx_path, patch_set, _ = mt_model
    good = _test_rows(patch_set)["path"].iloc[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    result = CliRunner().invoke(app, ["predict", good, str(bad), "--model", str(onnx_path), "--json"])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert "label" in rows[0] and "broken.jpg" in rows[1]["error"]
    missing = CliRunner().invoke(app, ["predict", good, "--model", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 1 and "nope.onnx" in missing.output


def test_int8_gate_accepts_within_tolerance_and_refuses_outside(mt_model, tmp_path):
    from smh_ml.deploy import Engine
    from smh_ml.export.precision_gate import validation_gate_captures
    from smh_ml.export.quantization import gated_int8

    _, onnx_path, patch_set, _ = mt_model
    gate = validation_gate_captures(patch_set, "defect-free", 0.25, 0)
    ok = gated_int8(onnx_path, patch_set, "defect-free", gate, tolerance=1.0, calibration_count=128,
                    out_path=tmp_path / "model.int8.onnx")
    assert ok.accepted and (tmp_path / "model.int8.onnx").is_file()
    assert ok.captures == len(gate.groups) > 0 and ok.split == "validation"
    assert Engine(tmp_path / "model.int8.onnx").precision == "int8"
    # activation ranges calibrated on black patches clip every real activation: a broken int8
    broken = gated_int8(onnx_path, patch_set, "defect-free", gate, tolerance=0.005,
                        calibration=np.zeros((64, *patch_set.patches.shape[1:]), np.uint8),
                        out_path=tmp_path / "model.int8.onnx")
    assert ok.fp32_accuracy > 1 / 6 + 0.05  # the fp32 model is better than a constant answer
    assert broken.drop > 0.005
    assert not broken.accepted and broken.int8_path is None
    assert not (tmp_path / "model.int8.onnx").exists()  # the older accepted file is gone too
    with pytest.raises(ValueError, match="tolerance"):
        gated_int8(onnx_path, patch_set, "defect-free", gate, tolerance=-0.1)


def test_the_precision_gate_decides_validation_captures_only_and_its_verdict_travels(mt_model, tmp_path):
    """The gate's captures are training captures held out of fitting, never test captures; the
    bf16 verdict (measured where the CPU has bf16, refused unmeasured where not) goes into the
    model card, and ``auto`` runs OpenVINO bf16 only for an accepted verdict on a bf16 CPU."""
    import importlib.util
    import shutil

    from smh_ml.deploy import Engine
    from smh_ml.deploy.runtime import read_card
    from smh_ml.export.precision_gate import BF16, gated_bf16, judge, record_verdicts, validation_gate_captures
    from smh_ml.hardware import has_native_bf16

    _, onnx_path, patch_set, names = mt_model
    gate = validation_gate_captures(patch_set, "defect-free", 0.25, 0)
    splits = patch_set.captures.set_index("capture_id").loc[gate.captures["capture_id"], "split"]
    assert len(gate.groups) > 0 and set(splits) == {"train"}
    model = Path(shutil.copy(onnx_path, tmp_path / "model.onnx"))
    verdict = gated_bf16(model, gate, names, tolerance=1.0)
    if has_native_bf16() and importlib.util.find_spec("openvino") is not None:
        assert verdict.accepted and verdict.accuracy is not None and verdict.captures == len(gate.groups)
        assert 0 <= verdict.same_decisions <= verdict.captures and verdict.hardware["bf16"]
    else:
        assert not verdict.accepted and verdict.accuracy is None and "not measured" in verdict.reason
    refused = judge("int8", (0.9, ["a", "b"]), (0.8, ["a", "c"]), 0.005, gate)
    assert not refused.accepted and "outside" in refused.reason and refused.same_decisions == 1
    # a changed decision that happens to correct one is still a change: refused
    assert not judge("int8", (0.5, ["a", "b"]), (1.0, ["a", "c"]), 0.005, gate).accepted
    assert judge("int8", (0.5, ["a", "b"]), (1.0, ["a", "c"]), 0.5, gate).accepted
    assert "no validation captures" in gated_bf16(model, None, names, tolerance=1.0).reason
    record_verdicts(model, [verdict.to_dict(), refused.to_dict()])
    card = read_card(model)
    assert card.accepts(BF16) is verdict.accepted and not card.accepts("int8")
    assert card.fast_paths[BF16]["split"] == "validation"
    assert Engine(model).backend == (BF16 if verdict.accepted else "onnxruntime")
    assert Engine(model, backend="onnxruntime").backend == "onnxruntime"
    assert Engine(model, threshold=None).backend == "onnxruntime"  # a rule the gate did not judge: fp32
    assert Engine(onnx_path).backend == "onnxruntime"  # never judged: never bf16


def test_auto_takes_bf16_only_for_an_accepted_verdict_on_a_bf16_cpu(monkeypatch):
    import dataclasses

    from smh_ml.deploy import engine as engine_module
    from smh_ml.deploy.card import ModelCard

    accepted = ModelCard("baseline_cnn", ("defect-free", "pits"), Geometry(1, 1, 32),
                         fast_paths={"openvino-bf16": {"accepted": True}})
    refused = ModelCard("baseline_cnn", ("defect-free", "pits"), Geometry(1, 1, 32),
                        fast_paths={"openvino-bf16": {"accepted": False}})
    monkeypatch.setattr("smh_ml.hardware.has_native_bf16", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "openvino" else None)
    assert engine_module.choose_backend(accepted) == "openvino-bf16"
    # an int8 file carrying an fp32 verdict still runs where its own gate ran: onnxruntime
    assert engine_module.choose_backend(dataclasses.replace(accepted, precision="int8")) == "onnxruntime"
    assert engine_module.choose_backend(refused) == "onnxruntime"
    assert engine_module.choose_backend(accepted, "onnxruntime") == "onnxruntime"
    monkeypatch.setattr("smh_ml.hardware.has_native_bf16", lambda: False)
    assert engine_module.choose_backend(accepted) == "onnxruntime"
    with pytest.raises(ValueError, match="backend 'tpu'"):
        engine_module.choose_backend(accepted, "tpu")


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_rest_serving_of_the_champion_answers_and_rejects(mt_model, tmp_path):
    from smh_ml.deploy import Engine
    from smh_ml.tracking.packaging import package_model
    from smh_ml.tracking.tracker import Tracker, resolve_model

    _, onnx_path, patch_set, _ = mt_model
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    example = patch_set.captures[patch_set.captures["split"] == "test"]["path"].iloc[0]
    package = package_model(onnx_path, tmp_path / "package", input_example=example)
    tracker = Tracker(tracking, str(tmp_path / "artifacts"), "serve-test", "serve-test")
    run = tracker.client().create_run(tracker.experiment_id()).info.run_id
    outcome = tracker.register(run, package, 0.9, "t1", 0.0, {"arch": "inception_cnn", "profile": "ci"})
    assert outcome["promote"] and outcome["version"] == 1
    # an MLflow 3 LoggedModel with its metric, a description, a signature and an input example
    version = tracker.client().get_model_version("serve-test", "1")
    assert version.source.startswith("models:/m-") and "held-out image accuracy 0.9000" in version.description
    logged = tracker.client().get_logged_model(version.source.removeprefix("models:/"))
    assert {m.key for m in logged.metrics} >= {"test_accuracy"} and logged.source_run_id == run

    local = resolve_model("models:/serve-test@champion", tracking, cache=tmp_path / "cache")
    assert local.read_bytes() == onnx_path.read_bytes()
    mlmodel = (local.parent.parent / "MLmodel").read_text()
    assert "loader_module: smh_ml.deploy.pyfunc" in mlmodel and "onnx:" in mlmodel and "signature:" in mlmodel
    assert (local.parent.parent / "input_example.json").is_file()
    with pytest.raises(FileNotFoundError, match="int8"):  # this champion has no gated int8 model
        resolve_model("models:/serve-test@champion", tracking, cache=tmp_path / "cache", int8=True)

    port = free_port()
    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH (CI does not activate it)
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = os.environ | {"MLFLOW_TRACKING_URI": tracking, "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": path}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/serve-test@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/ping", proc)
        url = f"http://127.0.0.1:{port}/invocations"
        paths = list(_test_rows(patch_set)["path"].iloc[:2])
        images = [base64.b64encode(open(p, "rb").read()).decode() for p in paths]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}).encode()
        status, answer = _post(url, body)
        assert status == 200, answer
        engine = Engine(onnx_path)
        expected = [engine.decide_bytes(open(p, "rb").read()).decision for p in paths]
        assert [r["label"] for r in answer["predictions"]] == [d.label for d in expected]
        assert [r["patch"] for r in answer["predictions"]] == [-1 if d.patch is None else d.patch for d in expected]

        bad = json.dumps({"dataframe_split": {"columns": ["image"], "data": [["%%% not base64 %%%"]]}}).encode()
        status, answer = _post(url, bad)
        assert 400 <= status < 500 and "base64" in answer.get("message", ""), answer
        status, answer = _post(url, json.dumps({"dataframe_split": {"columns": ["picture"], "data": [["x"]]}})
                               .encode())
        assert 400 <= status < 500 and "image" in answer.get("message", ""), answer
        status, _ = _post(url, b"{not json")
        assert 400 <= status < 500
        # the hostile corpus of tests/test_bad_inputs.py, one request each: a 400 with the reason
        # the engine gives (the same words validate and predict use), never a stack trace
        for name, data, words in _hostile_corpus(tmp_path / "hostile"):
            body = json.dumps({"dataframe_split": {"columns": ["image"],
                                                   "data": [[base64.b64encode(data).decode()]]}}).encode()
            status, answer = _post(url, body)
            message = answer.get("message", "")
            assert 400 <= status < 500 and words in message, (name, status, answer)
            assert "Traceback" not in json.dumps(answer) and "/site-packages/" not in json.dumps(answer), name
        assert proc.poll() is None  # still serving after bad requests
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _hostile_corpus(folder) -> list[tuple[str, bytes, str]]:
    """(name, file bytes, words of the refusal): no product, 1x1, several frames, NaN pixels,
    a decompression bomb over Pillow's default limit (a small file declaring 182 MP)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((200, 120), np.uint8)).save(folder / "black.png")
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(folder / "dot.png")
    frames = [Image.fromarray(np.full((64, 40), v, np.uint8)) for v in (100, 150)]
    frames[0].save(folder / "pages.tiff", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((64, 40), np.nan, np.float32)).save(folder / "nan.tiff")
    Image.new("1", (13500, 13500), 0).save(folder / "bomb.png", optimize=True)
    return [(name, (folder / name).read_bytes(), words) for name, words in
            [("black.png", "no product"), ("dot.png", "too small"), ("pages.tiff", "frames"),
             ("nan.tiff", "NaN"), ("bomb.png", "too large")]]


def test_fast_decode_reads_big_jpegs_at_reduced_scale_with_nearly_the_same_patches(tmp_path):
    from PIL import Image

    from smh_ml.data.simulate import simulate_capture
    from smh_ml.deploy import Engine
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build

    onnx_path = export_onnx(build("baseline_cnn", 3, 32).eval(), tmp_path / "m.onnx",
                            ModelCard("baseline_cnn", ("defect-free", "a", "b"), Geometry(rows=8, cols=2, patch=32)))
    capture = simulate_capture("pits", np.random.default_rng(3))  # 3584 px high
    Image.fromarray(capture.image).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(capture.image).save(tmp_path / "c.png")
    full, fast = Engine(onnx_path), Engine(onnx_path, fast_decode=True)
    reduced = fast.read(tmp_path / "c.jpg")
    assert reduced.shape[0] <= capture.image.shape[0] // 2  # decoded at 1/2 or less
    a, b = full.patches(full.read(tmp_path / "c.jpg")), fast.patches(reduced)
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 4.0  # grey levels
    assert np.array_equal(fast.read(tmp_path / "c.png"), full.read(tmp_path / "c.png"))  # PNG: always full
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    [pred] = list(fast.decide_paths([tmp_path / "bad.jpg"]))
    assert pred.decision is None and "bad.jpg" in pred.error
