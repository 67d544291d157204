"""The unknown-defect score of a trained classifier: feature statistics fitted on its training
patches (smh_ml.models.feature_distance), and per-capture patch distances for calibration and
evaluation. The threshold itself is smh_ml.decision's business."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from smh_ml.models.feature_distance import MAX_DIMENSIONS, FeatureDistance
from smh_ml.training.loop import to_input

MAX_PATCHES = 4096
"""Training patches the statistics are fitted on (stratified by class, rare classes whole):
enough for a 64 x 64 covariance, a few seconds of forward passes on 2 cores."""


def _batches(arrays: np.ndarray, batch_size: int):
    for start in range(0, len(arrays), batch_size):
        yield to_input(arrays[start:start + batch_size]).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def fit_feature_distance(model: nn.Module, arrays: np.ndarray, labels: np.ndarray, num_classes: int,
                         max_patches: int = MAX_PATCHES, seed: int = 0, batch_size: int = 256) -> FeatureDistance:
    """``model`` with its feature statistics, fitted on up to ``max_patches`` of the training
    ``arrays`` (uint8 patches) and their class indices ``labels``."""
    module = FeatureDistance(model.to("cpu").eval(), num_classes, MAX_DIMENSIONS, side=arrays.shape[-1]).eval()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    per_class = max(1, max_patches // max(len(np.unique(labels)), 1))
    rows = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                   for c in np.unique(labels)]))
    features = torch.cat([module.features(x) for x in _batches(arrays[rows], batch_size)]).double().numpy()
    return module.fit(features, labels[rows])


@torch.no_grad()
def capture_distances(module: FeatureDistance, groups: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
    """Per capture, each patch's distance to the nearest training class."""
    if not groups:
        return []
    module.eval()
    patches = np.concatenate(groups)
    distances = torch.cat([module.logits_and_distance(x)[1] for x in _batches(patches, batch_size)]).numpy()
    return np.split(distances, np.cumsum([len(g) for g in groups])[:-1])
