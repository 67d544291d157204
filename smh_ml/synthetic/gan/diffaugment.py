"""Differentiable augmentation (DiffAugment; Zhao et al., NeurIPS 2020) for grey patches.

With a few hundred real patches a critic memorises them and the generator's gradients turn
to noise. DiffAugment applies the same random policy to EVERY image the critic sees, real and
generated, in the critic's and in the generator's step; because every operation is
differentiable, the generator learns through it and never learns to draw the augmentations.
Policies (per sample): ``color`` (brightness and contrast; grey patches have no saturation),
``translation`` (shift by up to 1/8 of the side, zero padding) and ``cutout`` (a square of half
the side set to zero). Inputs are in the generator's [-1, 1] range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _uniform(n: int, rng: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=rng).to(device)


def color(x: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5) and contrast x U(0.5, 1.5) around each sample's mean, of the grey
    channel (a defect GAN's second channel is its mask, which has no brightness)."""
    grey = x[:, :1] + (_uniform(len(x), rng, x.device) - 0.5)
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    grey = (grey - mean) * (_uniform(len(x), rng, x.device) + 0.5) + mean
    return torch.cat([grey, x[:, 1:]], dim=1) if x.shape[1] > 1 else grey


def translation(x: torch.Tensor, rng: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by up to ``ratio`` of its side in x and y; the uncovered border is 0."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=rng).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=rng).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of ``ratio`` x the side at a random place in each sample."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1, 1), generator=rng).to(x.device) - ch // 2  # around a random centre
    left = torch.randint(0, w, (n, 1, 1), generator=rng).to(x.device) - cw // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}
POLICIES = tuple(OPS)


def check_policy(policy: Sequence[str]) -> tuple[str, ...]:
    unknown = [p for p in policy if p not in OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; known: {', '.join(POLICIES)}")
    return tuple(policy)


def diff_augment(x: torch.Tensor, policy: Sequence[str], rng: torch.Generator | None = None) -> torch.Tensor:
    """``x`` (N, 1, H, W) with every operation of ``policy`` applied, a fresh draw per sample."""
    for name in check_policy(policy):
        x = OPS[name](x, rng)
    return x
