import dataclasses
import json

import numpy as np
import pytest
import torch

from smh_ml.data.patching import Geometry
from smh_ml.deploy.card import ModelCard
from smh_ml.deploy.runtime import load_onnx, onnx_metadata, onnx_predict
from smh_ml.export.onnx import ParityError, check_parity, export_onnx
from smh_ml.models import build


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build("inception_cnn", 4, 32).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx",
                       ModelCard("inception_cnn", ("defect-free", "a", "b", "c"), Geometry(rows=8, cols=2, patch=32)))
    return model, path


def test_metadata_travels_with_the_model(exported):
    _, path = exported
    meta = onnx_metadata(path)
    assert meta["class_names"] == ["defect-free", "a", "b", "c"]
    assert meta["geometry"] == {"rows": 8, "cols": 2, "patch": 32} and meta["arch"] == "inception_cnn"
    assert not list(path.parent.glob("*.data"))  # one self-contained file


def _decoded(value: str):
    """A metadata value as onnx_metadata decodes it: JSON where it parses, else the string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def test_the_model_card_is_the_metadata_and_reads_older_exports(exported, tmp_path):
    """One typed record: written at export, read back whole; an export from before the card
    (flat keys, no precision or background level) reads with their defaults; a card that
    could not decide (threshold out of [0, 1], clean class not a class) is refused by name."""
    import onnx

    from smh_ml.deploy.card import INPUT_LAYOUT, to_input
    from smh_ml.deploy.runtime import read_card
    from smh_ml.export.onnx import write_card

    _, path = exported
    card = read_card(path)
    assert card == ModelCard("inception_cnn", ("defect-free", "a", "b", "c"), Geometry(rows=8, cols=2, patch=32))
    assert card.rule == "argmax" and card.clean_index == 0 and onnx_metadata(path)["input"] == INPUT_LAYOUT
    assert ModelCard.from_metadata(onnx_metadata(path)) == card
    tagged = ModelCard("x", ("ok", "bad"), Geometry(1, 1, 32), threshold=0.25, provenance={"test_set_id": "t1"})
    assert ModelCard.from_metadata({k: _decoded(v) for k, v in tagged.to_metadata().items()}) == tagged
    assert tagged.tags()["rule"] == "threshold" and tagged.tags()["threshold"] == "0.25"
    old = {"class_names": ["defect-free", "a"], "geometry": {"rows": 1, "cols": 2, "patch": 16}}
    assert ModelCard.from_metadata(old).background_level == 16 and ModelCard.from_metadata(old).precision == "fp32"
    with pytest.raises(ValueError, match="m.onnx: not an smh-ml classifier"):
        ModelCard.from_metadata({"geometry": {}}, "m.onnx")
    with pytest.raises(ValueError, match="threshold 1.5"):
        ModelCard.from_metadata({**old, "threshold": 1.5}, "m.onnx")
    with pytest.raises(ValueError, match="clean class 'free'"):
        ModelCard("x", ("a", "b"), Geometry(1, 1, 16), clean_class="free")
    proto = write_card(onnx.load(str(path)), dataclasses.replace(card, precision="int8"))
    assert [p.key for p in proto.metadata_props].count("precision") == 1
    patches = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    assert to_input(patches).shape == (2, 1, 4, 4) and to_input(patches).dtype == np.float32


def test_dynamic_batch_and_probabilities(exported):
    _, path = exported
    sess = load_onnx(path)
    for batch in (1, 7):
        probs = onnx_predict(sess, np.zeros((batch, 32, 32), np.uint8))
        assert probs.shape == (batch, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_parity_passes_and_fails_loudly(exported, sim_root):
    from smh_ml.data.captures import read_gray
    from smh_ml.data.patching import to_patches

    model, path = exported
    image = read_gray(sorted(sim_root.glob("pits/*.jpg"))[0])
    real = to_patches(image, size=(256, 64), patch=32)
    assert check_parity(model, path, real) <= 1e-4
    changed = build("inception_cnn", 4, 32).eval()
    with torch.no_grad():
        changed.classifier[-1].bias.add_(1.0)
    with pytest.raises(ParityError, match="differ by"):
        check_parity(changed, path, real)
