import numpy as np
import pytest
import torch

from smh_ml.deploy.runtime import onnx_metadata, onnx_predict, session
from smh_ml.export.onnx import ParityError, check_parity, export_onnx
from smh_ml.models import build


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build("inception_cnn", 4, 32).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", 32,
                       ["defect-free", "a", "b", "c"], {"rows": 8, "cols": 2, "patch": 32},
                       {"arch": "inception_cnn"})
    return model, path


def test_metadata_travels_with_the_model(exported):
    _, path = exported
    meta = onnx_metadata(path)
    assert meta["class_names"] == ["defect-free", "a", "b", "c"]
    assert meta["geometry"] == {"rows": 8, "cols": 2, "patch": 32} and meta["arch"] == "inception_cnn"
    assert not list(path.parent.glob("*.data"))  # one self-contained file


def test_dynamic_batch_and_probabilities(exported):
    _, path = exported
    sess = session(path)
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
