"""torchvision baselines of Tables 9-10, built with ``weights=None`` (nothing is ever
downloaded), adapted to one input channel and the class count. A local weights file
(a state dict, e.g. ImageNet weights saved beforehand) can be loaded; a 3-channel first
convolution is folded to one channel by summing over its input channels."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from smh_ml.models.registry import ArchCard, register_model


def _first_conv(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return parent, name


def _to_one_channel(model: nn.Module, conv_path: str) -> None:
    parent, name = _first_conv(model, conv_path)
    old: nn.Conv2d = getattr(parent, name)
    new = nn.Conv2d(1, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None)
    setattr(parent, name, new)


class MinSize(nn.Module):
    """Upsample inputs smaller than a network's minimum (InceptionV3 needs 75 px)."""

    def __init__(self, model: nn.Module, min_size: int):
        super().__init__()
        self.model, self.min_size = model, min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < self.min_size or x.shape[-2] < self.min_size:
            x = F.interpolate(x, size=(max(x.shape[-2], self.min_size), max(x.shape[-1], self.min_size)),
                              mode="bilinear", align_corners=False)
        return self.model(x)


# name -> (constructor, path of the first conv, extra constructor kwargs)
TORCHVISION = {
    "resnet50": (tvm.resnet50, "conv1", {}),
    "mobilenet_v2": (tvm.mobilenet_v2, "features.0.0", {}),
    "efficientnet_v2_s": (tvm.efficientnet_v2_s, "features.0.0", {}),
    "inception_v3": (tvm.inception_v3, "Conv2d_1a_3x3.conv",
                     {"aux_logits": False, "init_weights": True, "transform_input": False}),
}


def load_local_weights(model: nn.Module, weights: Path | str, conv_path: str) -> None:
    """Load a local state dict, folding a 3-channel first conv and skipping the classifier."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    key = f"{conv_path}.weight"
    if key in state and state[key].shape[1] == 3:
        state[key] = state[key].sum(dim=1, keepdim=True)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{weights}: no tensor matches the model's parameters")
    model.load_state_dict(usable, strict=False)


def torchvision_model(name: str, num_classes: int, patch: int = 256,
                      weights: Path | str | None = None) -> nn.Module:
    constructor, conv_path, kwargs = TORCHVISION[name]
    model = constructor(weights=None, num_classes=num_classes, **kwargs)
    _to_one_channel(model, conv_path)
    if weights is not None:
        load_local_weights(model, weights, conv_path)
    return MinSize(model, 75) if name == "inception_v3" else model


def _register(name: str) -> None:
    @register_model(ArchCard(name, stem_stride=2, own_weights=True, paper=True))
    def _build(num_classes: int, patch: int, weights=None, pretrained: bool = False) -> nn.Module:
        # ``weights`` here are ImageNet weights adapted to one channel by the builder
        return torchvision_model(name, num_classes, patch, weights)


for _name in TORCHVISION:
    _register(_name)
