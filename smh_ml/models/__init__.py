"""Patch classifiers, one builder per architecture, each registered once with its card
(:mod:`smh_ml.models.registry`).

``build(name, num_classes, patch)`` is the one entry point used everywhere; ``list_models()``
and ``get_card(name)`` the lookups. Importing this package registers every builder, the
paper's networks first.
"""

from __future__ import annotations

from torch import nn

from smh_ml.models import inception_cnn as _inception  # noqa: F401  (registers first: the paper's order)
from smh_ml.models.baseline_cnn import BaselineCNN, baseline_cnn
from smh_ml.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from smh_ml.models.flip_average import FlipAverage
from smh_ml.models.inception_cnn import InceptionCNN, inception_cnn
from smh_ml.models.registry import ArchCard, build, check_input, get_card, list_models
from smh_ml.models.torchvision_models import TORCHVISION, torchvision_model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["TORCHVISION", "ArchCard", "BaselineCNN", "EfficientNetLite0", "FlipAverage", "InceptionCNN",
           "baseline_cnn", "build", "check_input", "count_parameters", "efficientnet_lite0", "get_card",
           "inception_cnn", "list_models", "torchvision_model"]
