"""Inception-CNN (paper IV-D, Figs. 6-7).

conv(32, 5x5)+BN -> pool -> inception A -> pool -> conv(128, 5x5)+BN -> pool -> inception B
-> pool -> conv(256, 3x3)+BN -> pool -> inception C -> pool -> conv(512, 3x3)+BN -> pool ->
flatten (2x2x512) -> FC 256 -> 128 -> 64 -> classes. At 256 px this is 3,578,181 parameters
for 5 classes. Smaller patches reuse the same network: a pooling stage is skipped once the
feature map is already at the 2x2 flatten size, so the head (and the count) stays the same.
"""

from __future__ import annotations

import torch
from torch import nn

from smh_ml.models.registry import ArchCard, register_model

# (f1, f2, f3, f4, f5, f6) of modules A, B and C
INCEPTION_FILTERS = {
    "A": (32, 16, 16, 32, 16, 16),
    "B": (64, 64, 32, 96, 32, 64),
    "C": (128, 96, 96, 96, 64, 128),
}


def conv_relu(cin: int, cout: int, kernel: int, bn: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding="same")]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InceptionModule(nn.Module):
    """Four branches, stride 1, same padding, concatenated on channels (Fig. 7):
    (1) 3x3 conv f1 -> 1x1 conv f2; (2) 3x3 max-pool -> 1x1 conv f3;
    (3) 1x1 conv f4 -> 3x3 conv f5; (4) 3x3 max-pool -> 1x1 conv f6."""

    def __init__(self, cin: int, filters: tuple[int, int, int, int, int, int]):
        super().__init__()
        f1, f2, f3, f4, f5, f6 = filters
        self.branch1 = nn.Sequential(conv_relu(cin, f1, 3), conv_relu(f1, f2, 1))
        self.branch2 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_relu(cin, f3, 1))
        self.branch3 = nn.Sequential(conv_relu(cin, f4, 1), conv_relu(f4, f5, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_relu(cin, f6, 1))
        self.out_channels = f2 + f3 + f5 + f6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def fc_head(features: int, num_classes: int, widths: tuple[int, ...] = (256, 128, 64)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in widths:
        layers += [nn.Linear(features, width), nn.ReLU(inplace=True)]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def pooling_plan(patch: int, stages: int, final: int = 2) -> list[bool]:
    """Which of ``stages`` 2x2 max-pools to apply so ``patch`` ends at ``final`` px.

    All of them at 256 px (256 / 2**7 = 2); for smaller patches the last ones are skipped.
    """
    plan, size = [], patch
    for _ in range(stages):
        apply = size // 2 >= final
        plan.append(apply)
        size = size // 2 if apply else size
    if size != final:
        raise ValueError(f"patch {patch} cannot be pooled to {final}x{final} in {stages} stages")
    return plan


class InceptionCNN(nn.Module):
    def __init__(self, num_classes: int, patch: int = 256, in_channels: int = 1):
        super().__init__()
        pools = iter(pooling_plan(patch, 7))

        def pool() -> nn.Module:
            return nn.MaxPool2d(2) if next(pools) else nn.Identity()

        incept_a = InceptionModule(32, INCEPTION_FILTERS["A"])
        incept_b = InceptionModule(128, INCEPTION_FILTERS["B"])
        incept_c = InceptionModule(256, INCEPTION_FILTERS["C"])
        self.features = nn.Sequential(
            conv_relu(in_channels, 32, 5, bn=True), pool(),
            incept_a, pool(),
            conv_relu(incept_a.out_channels, 128, 5, bn=True), pool(),
            incept_b, pool(),
            conv_relu(incept_b.out_channels, 256, 3, bn=True), pool(),
            incept_c, pool(),
            conv_relu(incept_c.out_channels, 512, 3, bn=True), pool(),
        )
        self.classifier = fc_head(2 * 2 * 512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def inception_cnn(num_classes: int, patch: int = 256, in_channels: int = 1) -> InceptionCNN:
    return InceptionCNN(num_classes, patch, in_channels)


def pools_to_head(patch: int, stages: int = 7) -> str | None:
    """The problem with a patch side the paper's CNNs cannot pool to their 2x2 head, or None."""
    try:
        pooling_plan(patch, stages)
    except ValueError as exc:
        return str(exc)
    return None


# from scratch it needs about 5x the steps EfficientNet-Lite0 fine-tunes in: on whole magnetic-tile
# captures 300 steps leave it at 80.2%, 1,500 reach 97.8% (docs/RESULTS.md)
@register_model(ArchCard("inception_cnn", min_size=4, stem_stride=1, paper=True, size_rule=pools_to_head,
                         steps_scale=5.0))
def _build(num_classes: int, patch: int, weights=None, pretrained: bool = False) -> InceptionCNN:
    return inception_cnn(num_classes, patch)
