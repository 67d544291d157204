"""Patch classifiers, one builder per architecture, all built from parameters.

``build(name, num_classes, patch)`` is the one entry point used everywhere.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from smh_ml.models.baseline_cnn import BaselineCNN, baseline_cnn
from smh_ml.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from smh_ml.models.flip_average import FlipAverage
from smh_ml.models.inception_cnn import InceptionCNN, inception_cnn
from smh_ml.models.torchvision_models import TORCHVISION, torchvision_model

ARCHITECTURES = ("inception_cnn", "baseline_cnn", "efficientnet_lite0", *TORCHVISION)


def build(name: str, num_classes: int, patch: int = 256, weights: Path | str | None = None,
          pretrained: bool = False, flip_average: bool = False) -> nn.Module:
    """Build classifier ``name`` for ``num_classes`` classes on ``patch`` x ``patch`` x 1 input.

    ``weights`` is an optional local state-dict file (never downloaded); ``pretrained`` starts
    ``efficientnet_lite0`` from its ImageNet weights (shipped in a registry package); the
    others have none and ignore it. ``flip_average`` wraps the network in
    :class:`FlipAverage` (test-time flips inside the model); ``weights`` are then the
    wrapper's state dict, as saved from a model built the same way.
    """
    if name == "efficientnet_lite0":
        model = efficientnet_lite0(num_classes, patch, pretrained=pretrained and weights is None)
    elif name == "inception_cnn":
        model = inception_cnn(num_classes, patch)
    elif name == "baseline_cnn":
        model = baseline_cnn(num_classes, patch)
    elif name in TORCHVISION:
        # ``weights`` here are ImageNet weights adapted to one channel by the builder
        model = torchvision_model(name, num_classes, patch, weights)
        return FlipAverage(model) if flip_average else model
    else:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    if flip_average:
        model = FlipAverage(model)
    if weights is not None:
        import torch

        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHITECTURES", "BaselineCNN", "EfficientNetLite0", "FlipAverage", "InceptionCNN", "build",
           "count_parameters"]
