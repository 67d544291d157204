"""How far a patch's features lie from every class the classifier was trained on.

A defect type the model never saw is forced into a known class, often the clean one, with
high confidence, so no score built on the probabilities can flag it. Its features (what the
fully connected head receives: :func:`split_head`) are a different matter: the known classes form clusters
there, and a new kind of defect lands away from all of them. The score is the Mahalanobis
distance to the nearest class centre under one covariance shared by the classes (Lee et al.,
NeurIPS 2018), fitted on training patches only. Wide features (EfficientNet-Lite0's 1280) are
first projected on their 64 leading principal directions, and what the projection leaves is
added as a scaled residual, so a direction no training patch used still counts.

:class:`FeatureDistance` is the classifier (its ``forward`` gives the same logits) with the
statistics as buffers: it is saved, tested and exported as the model is, and
:meth:`FeatureDistance.logits_and_distance` gives both in one pass, so the exported ONNX graph
carries the statistics and the runtime reads the distance as a second output.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

MAX_DIMENSIONS = 64
"""Principal directions kept of wider features: with a few thousand training patches a
1280 x 1280 covariance cannot be estimated, 64 x 64 can."""
SHRINKAGE = 0.1
"""Share of the shared covariance replaced by its mean variance (a ridge that keeps the
inverse finite when a direction barely varies in training)."""


def _split_at(model: nn.Module, linear_name: str, sequential_cut: bool) -> tuple[nn.Module, nn.Module]:
    """``model`` cut before the fully connected layer ``linear_name``: with ``sequential_cut``
    the layer and everything after it in its ``nn.Sequential`` form the head (the model's
    last step must be that Sequential), else the layer alone does."""
    backbone = copy.deepcopy(model)
    parent_name, _, attribute = linear_name.rpartition(".")
    parent = backbone.get_submodule(parent_name) if parent_name else backbone
    if not sequential_cut:
        setattr(parent, attribute, nn.Identity())
        return backbone, model.get_submodule(linear_name)
    at = int(attribute)
    head = nn.Sequential(*list(model.get_submodule(parent_name))[at:])
    grand_name, _, parent_attribute = parent_name.rpartition(".")
    grand = backbone.get_submodule(grand_name) if grand_name else backbone
    setattr(grand, parent_attribute, nn.Sequential(*list(parent)[:at]))
    return backbone, head


@torch.no_grad()
def _exact(model: nn.Module, backbone: nn.Module, head: nn.Module, side: int = 64) -> bool:
    was = model.training
    model.eval(), backbone.eval(), head.eval()
    x = torch.rand(2, 1, side, side, generator=torch.Generator().manual_seed(0))
    try:
        ok = torch.allclose(head(backbone(x)), model(x), atol=1e-4, rtol=1e-4)
    except (RuntimeError, ValueError):  # the cut does not fit this model's forward
        ok = False
    model.train(was)
    return ok


def split_head(model: nn.Module, side: int = 64) -> tuple[nn.Module, nn.Module]:
    """(``backbone``, ``head``) with ``head(backbone(x)) == model(x)`` in eval mode (checked on
    a random ``side``-px input). The cut is before the first fully connected layer when it sits
    in the Sequential that ends the model (the paper's CNNs: the flattened convolutional map,
    2,048 values for the Inception-CNN, which keeps what the fully connected layers learn to
    ignore: an unseen defect); else before the last one (EfficientNet-Lite0's pooled 1280, and
    any model with test-time flips, whose views are averaged before the head: exact only when
    the head is affine)."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no fully connected layer to take features before")
    from smh_ml.models.flip_average import FlipAverage

    averaged = any(isinstance(m, FlipAverage) for m in model.modules())  # views meet before the head
    first_parent, _, first_attribute = linears[0].rpartition(".")
    if not averaged and first_parent and first_attribute.isdigit() \
            and isinstance(model.get_submodule(first_parent), nn.Sequential):
        backbone, head = _split_at(model, linears[0], sequential_cut=True)
        if _exact(model, backbone, head, side):
            return backbone, head
    backbone, head = _split_at(model, linears[-1], sequential_cut=False)
    if not _exact(model, backbone, head, side):
        raise ValueError(f"{type(model).__name__}: its logits are not its last fully connected layer's output")
    return backbone, head


class FeatureDistance(nn.Module):
    """``model``'s logits and each input's distance to the nearest training class."""

    def __init__(self, model: nn.Module, num_classes: int, dimensions: int, side: int = 64):
        super().__init__()
        self.backbone, self.head = split_head(model, side)
        width = next(m for m in self.head.modules() if isinstance(m, nn.Linear)).in_features
        k = min(width, dimensions)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("basis", torch.eye(width)[:, :k].clone())
        self.register_buffer("centres", torch.zeros(num_classes, k))
        self.register_buffer("whiten", torch.eye(k))
        self.register_buffer("residual_scale", torch.ones(()))
        self.register_buffer("projected", torch.tensor(float(k < width)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        centred = features - self.mean
        z = centred @ self.basis
        offsets = (z[:, None, :] - self.centres[None]) @ self.whiten
        nearest = offsets.pow(2).sum(-1).amin(1)
        residual = (centred - z @ self.basis.T).pow(2).sum(1) / self.residual_scale
        return nearest + self.projected * residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def logits_and_distance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(f), self.distance(f)

    @torch.no_grad()
    def fit(self, features: np.ndarray, labels: np.ndarray) -> FeatureDistance:
        """Fit the statistics on training patches' ``features`` (n, width) and class indices."""
        f = np.asarray(features, np.float64)
        labels = np.asarray(labels)
        if len(f) < 2:
            raise ValueError("fitting feature statistics needs at least two training patches")
        mean = f.mean(0)
        centred = f - mean
        k = self.basis.shape[1]
        if self.projected:
            basis = np.linalg.svd(centred, full_matrices=False)[2][:k].T
            # fewer patches than directions: the missing ones are zero (their part is residual)
            basis = np.pad(basis, ((0, 0), (0, k - basis.shape[1])))
            residual = centred - centred @ basis @ basis.T
            # floored at a small share of the total variance: features that (nearly) fit in
            # the kept directions must not turn float rounding into distance
            residual_scale = max(float((residual ** 2).sum(1).mean()), 1e-4 * float((centred ** 2).sum(1).mean()))
        else:
            basis, residual_scale = np.eye(f.shape[1]), 1.0
        z = centred @ basis
        centres = np.full((self.centres.shape[0], k), 1e6)  # a class with no training patch is never near
        within = np.zeros_like(z)
        for c in np.unique(labels):
            rows = labels == c
            centres[c] = z[rows].mean(0)
            within[rows] = z[rows] - centres[c]
        cov = within.T @ within / len(z)
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * max(np.trace(cov) / k, 1e-12) * np.eye(k)
        whiten = np.linalg.cholesky(np.linalg.inv(cov))  # L with L L^T = cov^-1
        dtype = self.mean.dtype
        for name, value in (("mean", mean), ("basis", basis), ("centres", centres), ("whiten", whiten),
                            ("residual_scale", np.array(residual_scale))):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=dtype))
        return self
