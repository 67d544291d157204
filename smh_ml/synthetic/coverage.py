"""How much of a class's real variety generated samples cover: mode collapse in features.

FID mixes two failures into one number: samples unlike the real ones, and samples that are
all alike. A generator that draws one plausible defect over and over (a collapsed GAN) can
pass the pixel checks (its samples are not flat, and shifted copies of one texture differ
pixel by pixel) while covering a few real examples only. The k-nearest-neighbour measures of
Kynkäänniemi et al. (2019, "Improved precision and recall") and Naeem et al. (2020,
"Reliable fidelity and diversity metrics") read that off the extractor's features:

- ``coverage``: the share of real samples whose k-NN ball (radius: the distance to their
  k-th nearest real neighbour) holds at least one generated sample. Robust to outliers; a
  collapsed generator covers the few real samples near its one mode.
- ``recall``: the share of real samples inside the generated samples' k-NN manifold.
- ``precision``: the share of generated samples inside the real samples' k-NN manifold.
"""

from __future__ import annotations

import torch

K_NEIGHBOURS = 5
"""Naeem et al.'s choice for coverage: with as many generated as real samples from one
distribution, coverage is then about 1 - 2**-5 = 0.97."""


def _kth_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row."""
    d = torch.cdist(features, features)
    k = min(k, len(features) - 1)
    return d.kthvalue(k + 1, dim=1).values  # the 0-th nearest is the row itself


@torch.no_grad()
def manifold_scores(real: torch.Tensor, fake: torch.Tensor, k: int = K_NEIGHBOURS) -> dict[str, float]:
    """Precision, recall and coverage of ``fake`` (M, D) features against ``real`` (N, D)."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("coverage needs at least two real and two generated samples")
    real, fake = real.double(), fake.double()
    real_radius, fake_radius = _kth_radius(real, k), _kth_radius(fake, k)
    between = torch.cdist(real, fake)  # (N, M)
    inside_real = between < real_radius[:, None]  # fake j inside real i's ball
    inside_fake = between < fake_radius[None, :]  # real i inside fake j's ball
    return {"precision": float(inside_real.any(dim=0).double().mean()),
            "recall": float(inside_fake.any(dim=1).double().mean()),
            "coverage": float(inside_real.any(dim=1).double().mean()),
            "k": int(min(k, len(real) - 1))}
