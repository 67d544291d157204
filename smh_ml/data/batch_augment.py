"""On-the-fly traditional augmentation of a whole training batch, one draw per sample.

The paper's traditional augmentation (flips, brightness, contrast; no rotation, no crop) plus a
small shift, applied to a (N, 1, H, W) float batch inside the training step instead of as fixed
augmented copies. torchvision's v2 transforms draw one set of parameters per call, so a batch
would share one flip; these are the same operations with a parameter per sample, vectorised,
so a training step does no per-sample Python work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def flip(x: torch.Tensor, generator: torch.Generator | None, dim: int) -> torch.Tensor:
    keep = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(keep.view(-1, 1, 1, 1).to(x.device), x, x.flip(dim))


def brightness_contrast(x: torch.Tensor, brightness: float, contrast: float,
                        generator: torch.Generator | None) -> torch.Tensor:
    """``ColorJitter``'s brightness and contrast factors, uniform in [1 - b, 1 + b], per sample."""
    n = x.shape[0]
    b = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * brightness
    c = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * contrast
    x = x * b.to(x.device)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c.to(x.device) + mean).clamp_(0.0, 1.0)


def shift(x: torch.Tensor, fraction: float, generator: torch.Generator | None) -> torch.Tensor:
    """Translate each sample by up to ``fraction`` of its side, edges reflected (no crop: the
    whole defect stays in the patch unless it touches the border)."""
    n = x.shape[0]
    offsets = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * fraction)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = offsets
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_batch(x: torch.Tensor, brightness: float, contrast: float, shift_fraction: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal and vertical flips, brightness, contrast and shift, per sample."""
    x = flip(flip(x, generator, 3), generator, 2)
    if shift_fraction > 0:
        x = shift(x, shift_fraction, generator)
    if brightness > 0 or contrast > 0:
        x = brightness_contrast(x, brightness, contrast, generator)
    return x
