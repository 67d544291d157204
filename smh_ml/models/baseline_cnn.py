"""The paper's baseline CNN (V-C): 7 conv layers, each followed by 2x2 max pooling, and the
same FC head as Inception-CNN. The paper gives 5.12 M parameters but not the widths; our
widths (32, 64, 128, 256, 256, 512, 512; 3x3, BN, ReLU) give 5.09 M at 5 classes."""

from __future__ import annotations

import torch
from torch import nn

from smh_ml.models.inception_cnn import conv_relu, fc_head, pooling_plan, pools_to_head
from smh_ml.models.registry import ArchCard, register_model

BASELINE_WIDTHS = (32, 64, 128, 256, 256, 512, 512)


class BaselineCNN(nn.Module):
    def __init__(self, num_classes: int, patch: int = 256, in_channels: int = 1,
                 widths: tuple[int, ...] = BASELINE_WIDTHS, height: int | None = None):
        """``patch`` is the input width (and height unless ``height`` is given: whole O-TA
        images, e.g. the paper's 512 x 256, end at 4 x 2 instead of 2 x 2)."""
        super().__init__()
        layers: list[nn.Module] = []
        cin, rows = in_channels, height or patch
        for width, apply in zip(widths, pooling_plan(patch, len(widths))):
            layers += [conv_relu(cin, width, 3, bn=True), nn.MaxPool2d(2) if apply else nn.Identity()]
            cin, rows = width, rows // 2 if apply else rows
        self.features = nn.Sequential(*layers)
        self.classifier = fc_head(rows * 2 * cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def baseline_cnn(num_classes: int, patch: int = 256, in_channels: int = 1,
                 height: int | None = None) -> BaselineCNN:
    return BaselineCNN(num_classes, patch, in_channels, height=height)


@register_model(ArchCard("baseline_cnn", min_size=4, stem_stride=1, paper=True, size_rule=pools_to_head))
def _build(num_classes: int, patch: int, weights=None, pretrained: bool = False) -> BaselineCNN:
    return baseline_cnn(num_classes, patch)
