"""SDG-GAN (paper IV-C, Tables 2-3) and the DCGAN baseline (Table 1).

Both are built from (patch, latent, width): at the ``paper`` profile (256 px, latent 256,
width 1) they are exactly the paper's tables; smaller patches drop upsampling (generator)
or downsampling (critic) stages and ``width`` scales every channel count, so the CPU
profiles run the same code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from smh_ml.config.schema import GAN_UPSAMPLING

# Table 2: (kind, kernel, channels) after the 4x4x512 reshape; "up" doubles the size.
SDG_GENERATOR = [("up", 4, 512), ("up", 4, 256), ("up", 4, 128), ("up", 6, 128), ("up", 6, 64),
                 ("conv", 4, 64), ("conv", 4, 64), ("up", 6, 32)]
# Table 3: (kernel, filters) of the six Conv + AvgPool blocks.
SDG_CRITIC = [(7, 32), (5, 64), (5, 128), (5, 256), (3, 512), (3, 1024)]
LEAK = 0.2


def _doublings(patch: int) -> int:
    n = math.log2(patch / 4)
    if n < 1 or n != int(n):
        raise ValueError(f"GAN patch size must be 4 * 2**k (k >= 1), got {patch}")
    return int(n)


def _ch(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _tconv(cin: int, cout: int, kernel: int) -> nn.ConvTranspose2d:
    """Stride-2 transposed conv that exactly doubles the size (k=4: pad 1; k=6: pad 2)."""
    return nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=(kernel - 2) // 2)


def _up(cin: int, cout: int, kernel: int, upsample: str) -> nn.Module:
    """A Table 2 "up" stage: the paper's stride-2 transposed conv, or (``resize``) nearest-neighbour
    doubling followed by a conv of the same kernel. Transposed convs whose kernel overlaps
    unevenly draw a periodic grid (Odena et al., Distill 2016, "Deconvolution and checkerboard
    artifacts"); resizing first spreads every input pixel evenly."""
    if upsample == "transposed":
        return _tconv(cin, cout, kernel)
    if upsample == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, kernel, padding="same"))
    raise ValueError(f"unknown GAN upsampling {upsample!r}; known: {', '.join(GAN_UPSAMPLING)}")


class SDGGenerator(nn.Module):
    """z (latent) -> FC -> BN -> LReLU -> 4x4xC -> Table 2 stages -> patch x patch x channels, tanh
    (one grey channel; a defect GAN draws a second, the defect's mask)."""

    def __init__(self, patch: int = 256, latent: int = 256, width: float = 1.0, upsample: str = "transposed",
                 channels: int = 1):
        super().__init__()
        ups_needed = _doublings(patch)
        layers = list(SDG_GENERATOR)
        while sum(kind == "up" for kind, _, _ in layers) > ups_needed:  # drop early up stages
            layers.pop(next(i for i, (kind, _, _) in enumerate(layers) if kind == "up"))
        self.latent = latent
        self.start = _ch(512, width)
        self.fc = nn.Sequential(nn.Linear(latent, 4 * 4 * self.start),
                                nn.BatchNorm1d(4 * 4 * self.start), nn.LeakyReLU(LEAK))
        blocks: list[nn.Module] = []
        cin = self.start
        for kind, kernel, stage_channels in layers:
            cout = _ch(stage_channels, width)
            conv = _up(cin, cout, kernel, upsample) if kind == "up" else nn.Conv2d(cin, cout, kernel, padding="same")
            blocks += [conv, nn.LeakyReLU(LEAK)]
            cin = cout
        blocks += [nn.Conv2d(cin, channels, 5, padding="same"), nn.Tanh()]
        self.body = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(-1, self.start, 4, 4))


class SDGCritic(nn.Module):
    """Conv + LReLU + AvgPool(2) blocks (no batch norm) down to 4x4, flatten, linear output."""

    def __init__(self, patch: int = 256, width: float = 1.0, channels: int = 1):
        super().__init__()
        blocks: list[nn.Module] = []
        cin = channels
        for kernel, filters in SDG_CRITIC[:_doublings(patch)]:
            cout = _ch(filters, width)
            blocks += [nn.Conv2d(cin, cout, kernel, padding="same"), nn.LeakyReLU(LEAK), nn.AvgPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.flat_features = 4 * 4 * cin
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(self.flat_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1)


class DCGANGenerator(nn.Module):
    """Table 1 baseline: transposed convs only, batch norm, ReLU, tanh output."""

    def __init__(self, patch: int = 256, latent: int = 256, width: float = 1.0, out_channels: int = 1):
        super().__init__()
        n = _doublings(patch)
        channels = [_ch(max(32, 512 // 2 ** i), width) for i in range(n)]
        self.latent = latent
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent, channels[0], 4, 1, 0),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(True)]
        for cin, cout in zip(channels, channels[1:]):
            layers += [_tconv(cin, cout, 4), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [_tconv(channels[-1], out_channels, 4), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z.view(-1, self.latent, 1, 1))


class DCGANDiscriminator(nn.Module):
    """Table 1 baseline: strided convs, batch norm, LeakyReLU; outputs logits (sigmoid in
    the BCE loss, ``BCEWithLogitsLoss``, which is the numerically stable form)."""

    def __init__(self, patch: int = 256, width: float = 1.0, in_channels: int = 1):
        super().__init__()
        n = _doublings(patch)
        channels = [_ch(min(1024, 32 * 2 ** i), width) for i in range(n)]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(channels):
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.LeakyReLU(LEAK, True))
            cin = cout
        layers += [nn.Conv2d(cin, 1, 4, 1, 0)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).view(-1)


def build_gan(kind: str, patch: int, latent: int, width: float, upsample: str = "transposed",
              channels: int = 1) -> tuple[nn.Module, nn.Module]:
    """(generator, critic/discriminator) for ``kind`` in {"sdg", "dcgan"}; ``upsample`` shapes
    SDG-GAN's up stages (the DCGAN baseline stays Table 1's transposed convs); ``channels`` of
    the images drawn and judged (2 for a defect crop and its mask)."""
    if kind == "sdg":
        return SDGGenerator(patch, latent, width, upsample, channels), SDGCritic(patch, width, channels)
    if kind == "dcgan":
        return DCGANGenerator(patch, latent, width, channels), DCGANDiscriminator(patch, width, channels)
    raise KeyError(f"unknown GAN {kind!r}; known: sdg, dcgan")
