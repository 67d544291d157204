"""Every kind of bad capture gets a clear error naming the file and the rule, and loses nothing."""

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smh_ml.data.captures import CaptureError, load_manifest, read_gray
from smh_ml.data.validation import validate_manifest


def _tree_hashes(root):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def good_root(sim_root, tmp_path):
    root = tmp_path / "captures"
    shutil.copytree(sim_root, root)
    return root


def _violations(root, profile, classes=None):
    report = validate_manifest(load_manifest(root), profile, classes)
    return report, {("/".join(Path(v.file).parts[-2:]), v.rule): v for v in report.violations}


def test_good_set_passes(good_root, ci_profile):
    report, _ = _violations(good_root, ci_profile)
    assert report.success, report.format()
    assert report.class_counts["defect-free"] == 14


def _gray(path, size=(64, 40), mode="L"):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(60, 200, size, dtype=np.uint8)).convert(mode).save(path)


def _colour(path, size=(64, 40)):
    """A truly coloured capture (its channels differ)."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8), "RGB").save(path)


def test_each_bad_input_is_reported(good_root, ci_profile):
    clean = good_root / "defect-free"
    # truncated JPEG
    jpg = clean / "truncated.jpg"
    _gray(jpg)
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    (clean / "empty.png").write_bytes(b"")  # 0-byte file
    _colour(clean / "colour.png")  # RGB
    Image.fromarray(np.full((64, 40), 4000, np.uint16)).save(clean / "deep.png")  # 16-bit
    (clean / "text.png").write_text("not an image at all\n")  # not an image
    pits = good_root / "pits"
    _gray(pits / "wrongmask.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pits / "wrongmask.mask.png")
    (good_root / "notes.txt").write_text("stray file in the root")
    (clean / "README.md").write_text("unknown file type")
    (good_root / "Bad Class").mkdir()  # not a valid class name
    _gray(good_root / "Bad Class" / "x.png")
    shutil.copy(clean / sorted(p.name for p in clean.glob("sim-*.jpg"))[0], pits / "dup.jpg")
    (good_root / "empty-class").mkdir()
    before = _tree_hashes(good_root)

    report, found = _violations(good_root, ci_profile)
    assert not report.success
    rules = {key[0]: rule for key, _ in found.items() for rule in [key[1]]}
    text = report.format()
    assert "does not decode" in found[("defect-free/truncated.jpg", "file decodes as an image")].value
    assert "0 bytes" in found[("defect-free/empty.png", "file decodes as an image")].value
    assert "not an image" in found[("defect-free/text.png", "file decodes as an image")].value
    assert "RGB" in found[("defect-free/colour.png", next(r for r in rules.values() if "8-bit" in r))].value
    assert any(k[0] == "defect-free/deep.png" and "8-bit" in k[1] for k in found)
    assert "10x10" in found[("pits/wrongmask.png", "mask decodes and has its image's size")].value
    assert any(k[0].endswith("notes.txt") for k in found)
    assert any(k[0] == "defect-free/README.md" for k in found)
    assert any(k[0] == "Bad Class/x.png" and "known class" in k[1] for k in found)
    assert any(k[0] == "pits/dup.jpg" and "two labels" in k[1] for k in found)
    assert any("empty-class" in v.file and "at least one capture" in v.rule for v in report.violations)
    assert "truncated.jpg" in text and "wrongmask.png" in text
    assert _tree_hashes(good_root) == before  # nothing moved, rewritten or deleted


def test_declared_classes_reject_an_unknown_folder(good_root, ci_profile):
    (good_root / "dents").mkdir()
    _gray(good_root / "dents" / "d1.png")
    classes = ["defect-free", "imprinted", "pits", "roll-marks", "scratches"]
    report, found = _violations(good_root, ci_profile, classes)
    assert any(k[0] == "dents/d1.png" and "known class" in k[1] for k in found)
    report, _ = _violations(good_root, ci_profile, None)  # undeclared: a new class is fine
    assert report.success, report.format()


def test_convert_color_accepts_rgb_and_16_bit_and_says_so(good_root, ci_profile):
    from smh_ml.config.overrides import with_overrides

    _colour(good_root / "defect-free" / "colour.png")
    # (a bright part: a uniform 4000 of 65535 would be 16 grey levels, no product above the background)
    Image.fromarray(np.full((64, 40), 40000, np.uint16)).save(good_root / "defect-free" / "deep.png")
    profile = with_overrides(ci_profile, {"validation.convert_color": True})
    report, _ = _violations(good_root, profile)
    assert report.success and "2 capture(s) converted" in report.notes[0]
    assert read_gray(good_root / "defect-free" / "deep.png", convert=True).max() == round(40000 / 65535 * 255)
    with pytest.raises(CaptureError, match="deep.png.*16-bit"):
        read_gray(good_root / "defect-free" / "deep.png")


def test_grey_stored_as_rgb_is_read_as_grey_and_reported(good_root, ci_profile):
    """Grey saved as 3-channel JPEG (channels equal up to the codec's rounding) needs no setting."""
    _gray(good_root / "defect-free" / "grey-as-rgb.jpg", mode="RGB")
    _gray(good_root / "defect-free" / "grey-as-rgb.png", mode="RGB")
    report, _ = _violations(good_root, ci_profile)
    assert report.success, report.format()
    assert any("2 capture(s) stored as RGB with equal channels" in note for note in report.notes)
    grey = np.asarray(Image.open(good_root / "defect-free" / "grey-as-rgb.png").convert("L"))
    assert np.array_equal(read_gray(good_root / "defect-free" / "grey-as-rgb.png"), grey)
    _colour(good_root / "defect-free" / "colour.png")  # a coloured one still needs the setting
    with pytest.raises(CaptureError, match="colour.png.*RGB"):
        read_gray(good_root / "defect-free" / "colour.png")


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(CaptureError, match="missing.png: file does not exist"):
        read_gray(tmp_path / "missing.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(CaptureError, match=r"zero.jpg: empty file \(0 bytes\)"):
        read_gray(tmp_path / "zero.jpg")


def test_links_out_of_the_capture_root_are_refused_and_never_read(good_root, ci_profile, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    _gray(outside / "secret.png")
    (outside / "cls").mkdir()
    _gray(outside / "cls" / "x.png")
    (good_root / "defect-free" / "linked.png").symlink_to(outside / "secret.png")
    (good_root / "linked-class").symlink_to(outside / "cls", target_is_directory=True)
    report, found = _violations(good_root, ci_profile)
    assert not report.success
    problems = {k[0]: v.value for k, v in found.items() if "link" in str(v.value)}
    assert any(k.endswith("defect-free/linked.png") for k in problems)
    assert any(k.endswith("linked-class") for k in problems)
    from smh_ml.data.captures import load_manifest

    manifest = load_manifest(good_root)
    assert not manifest["path"].str.contains("linked").any()  # neither file was decoded or hashed


def _bomb(path, side=12000):
    """A tiny PNG declaring more pixels than Pillow's decompression-bomb limit allows."""
    Image.new("L", (side, side), 0).save(path, optimize=True)


def test_hostile_and_undecidable_files_are_refused_alike_by_validate_and_predict(good_root, ci_profile,
                                                                                  tmp_path):
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy import Engine
    from smh_ml.deploy.card import ModelCard
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build

    clean = good_root / "defect-free"
    Image.fromarray(np.zeros((200, 120), np.uint8)).save(clean / "black.png")  # no product
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(clean / "dot.png")  # 1x1
    frames = [Image.fromarray(np.full((64, 40), v, np.uint8)) for v in (100, 150)]
    frames[0].save(clean / "pages.tiff", save_all=True, append_images=frames[1:])
    Image.fromarray(np.full((64, 40), np.nan, np.float32)).save(clean / "nan.tiff")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 10_000_000  # keep the bomb small on disk and in memory
    try:
        _bomb(clean / "bomb.png", side=4500)  # 20 MP: over twice the limit
        report, found = _violations(good_root, with_overrides_convert(ci_profile))
        refused = {k[0]: str(v.value) for k, v in found.items()}
        for name, words in {"black.png": "no product", "dot.png": "too small", "pages.tiff": "frames",
                            "nan.tiff": "NaN", "bomb.png": "too large"}.items():
            assert words in refused.get(f"defect-free/{name}", ""), (name, refused)
        onnx_path = export_onnx(build("baseline_cnn", 2, 16).eval(), tmp_path / "m.onnx",
                                ModelCard("baseline_cnn", ("defect-free", "pits"), Geometry(rows=2, cols=1, patch=16)))
        engine = Engine(onnx_path)
        files = [clean / n for n in ("black.png", "dot.png", "pages.tiff", "nan.tiff", "bomb.png")]
        files.append(next(clean.glob("sim-*.jpg")))
        results = list(engine.decide_paths(files))
        assert [r.error is None for r in results] == [False] * 5 + [True]  # the batch goes on
        for result, (name, words) in zip(results, [("black.png", "no product"), ("dot.png", "too small"),
                                                    ("pages.tiff", "frames"), ("nan.tiff", "NaN"),
                                                    ("bomb.png", "too large")]):
            assert name in result.error and words in result.error
        with pytest.raises(CaptureError, match="too large"):
            engine.decide_bytes((clean / "bomb.png").read_bytes(), "row 0")
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def with_overrides_convert(profile):
    from smh_ml.config.overrides import with_overrides

    return with_overrides(profile, {"validation.convert_color": True})


def _outcome(kind, row: dict) -> bool:
    """Whether one path's answer for ``kind`` (``error`` and ``note`` of its row) is the corpus's."""
    error, note = row.get("error") or "", row.get("note") or ""
    if kind.outcome in ("refused", "partial"):
        return kind.words in error and not note
    if kind.outcome == "converted":
        return not error and note.startswith("converted to 8-bit grey") and kind.words in note
    return kind.outcome == "ok" and not error and not note


def test_the_bad_input_corpus_meets_one_capture_rule_in_validate_predict_watch_and_serving(tmp_path, monkeypatch):
    """Every kind of tests/capture_corpus.py (>= 40, made here) gets the same outcome from
    validation, ``smh-ml predict``, the ``watch`` station and the serving model: decided,
    converted and said, or refused with the same words; nothing passed over in silence
    (only hidden files are not read, and the station waits for partial names' renames)."""
    import base64
    import json

    import pandas as pd
    from capture_corpus import BOMB_LIMIT, by_outcome, write_corpus
    from typer.testing import CliRunner

    from smh_ml.cli import app
    from smh_ml.config.presets import get_profile
    from smh_ml.data.patching import Geometry
    from smh_ml.deploy.card import ModelCard
    from smh_ml.deploy.pyfunc import DecisionModel
    from smh_ml.deploy.watch import FileSource, Station
    from smh_ml.export.onnx import export_onnx
    from smh_ml.models import build

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    root = tmp_path / "caps"
    kinds = write_corpus(root / "defect-free")
    assert len(kinds) >= 40
    refused = by_outcome("refused") | by_outcome("partial")
    read = set(kinds) - by_outcome("ignored")

    report = validate_manifest(load_manifest(root), get_profile("auto"))
    said: dict[str, dict] = {}
    for v in report.violations:
        said.setdefault(Path(v.file).name, {"error": ""})["error"] += f"{v.rule}: {v.value}; "
    assert set(said) == refused, report.format()
    converted = by_outcome("converted")
    assert f"{len(converted)} capture(s) converted to 8-bit grey" in report.notes, report.notes
    assert [n for n in refused if not _outcome(kinds[n], said[n])] == [], report.format()

    # a model trained on 300 x 260 captures (its card allows 4x that area)
    card = ModelCard("baseline_cnn", ("defect-free", "dent"), Geometry(1, 1, 32), max_pixels=4 * 300 * 260)
    model = export_onnx(build("baseline_cnn", 2, 32).eval(), tmp_path / "m.onnx", card)
    result = CliRunner().invoke(app, ["predict", str(root), "--model", str(model), "--json"])
    rows = {Path(r["path"]).name: r for r in json.loads(result.stdout[result.stdout.index("["):])}
    assert set(rows) == read  # every file read has its line
    assert [n for n, r in rows.items() if not _outcome(kinds[n], r)] == [], rows

    station = Station(root, FileSource(model), tmp_path / "station" / "decisions.jsonl", settle_seconds=0)
    station.scan()
    while station.step() or station._seen:
        pass
    logged = {Path(r["path"]).name: r for r in map(json.loads, station.log.path.read_text().splitlines())}
    assert set(logged) == read - by_outcome("partial")  # waiting for the rename, not refused
    assert [n for n, r in logged.items() if not _outcome(kinds[n], r)] == [], logged

    serving = DecisionModel(model)
    answers = {}
    for name, kind in kinds.items():
        if kind.by_name or name not in read:
            continue  # a request carries bytes, no name to judge
        request = pd.DataFrame({"image": [base64.b64encode((root / "defect-free" / name).read_bytes()).decode()]})
        try:
            answers[name] = serving.predict(request).iloc[0].to_dict()
        except Exception as exc:  # MLflow's 400 with the reason
            answers[name] = {"error": str(exc)}
    assert len(answers) >= 40
    assert [n for n, r in answers.items() if not _outcome(kinds[n], r)] == [], answers

    # a named tile profile converts nothing: it refuses every converted kind, as before
    named = validate_manifest(load_manifest(root), get_profile("demo"))
    assert converted <= {Path(v.file).name for v in named.violations}
