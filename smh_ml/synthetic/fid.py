"""How realistic are generated patches: FID and KID (torchmetrics), two feature extractors.

- ``inception``: the standard FID Inception-v3 (pt_inception-2015-12-05), loaded from a
  local weights file the user configures; nothing is downloaded. Comparable with the
  paper's Table 6 only in kind (their data is not ours).
- ``domain``: the penultimate layer of a patch classifier trained on this data set's real
  patches. Available offline; its numbers are on another scale and are reported as
  *domain* FID/KID, never set beside the paper's as if equal.

KID (unbiased) is the better measure when a class has a few dozen real patches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from smh_ml.synthetic.coverage import manifold_scores

EXTRACTORS = ("domain", "imagenet", "inception")
IMAGENET_NAME = "imagenet-efficientnet-lite0"
"""How reports name the ImageNet extractor: EfficientNet-Lite0's pooled 1280-d features."""


class DomainFeatures(nn.Module):
    """Penultimate-layer features of a trained Inception-CNN / baseline CNN.

    Takes float (N, 1, P, P) in [0, 1] and returns (N, d), d = the last hidden FC width.
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        if not hasattr(classifier, "features") or not hasattr(classifier, "classifier"):
            raise TypeError("domain features need a model with .features and .classifier "
                            "(inception_cnn or baseline_cnn)")
        self.features = classifier.features
        self.head = classifier.classifier[:-1]  # everything but the last Linear
        self.num_features = int(classifier.classifier[-1].in_features)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ImageNetFeatures(nn.Module):
    """EfficientNet-Lite0's ImageNet features (pooled, 1280-d) of grey patches: a generic,
    pretrained view next to the ``domain`` one, from the weights shipped in a registry
    package (never downloaded). Takes float (N, 1, P, P) in [0, 1]."""

    num_features = 1280

    def __init__(self):
        super().__init__()
        from smh_ml.models.efficientnet_lite import EfficientNetLite0

        self.net = EfficientNetLite0(num_classes=2, pretrained=True).eval()  # the head is unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class GreyToInception(nn.Module):
    """Feeds grey uint8 patches to torch-fidelity's FID Inception-v3 (3 channels, 299 px)."""

    def __init__(self, weights_path: Path | str):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        if not Path(weights_path).is_file():
            raise FileNotFoundError(f"{weights_path}: FID Inception weights file not found "
                                    "(pt_inception-2015-12-05); it is never downloaded")
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(weights_path))
        self.num_features = 2048
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.repeat(1, 3, 1, 1))[0].reshape(x.shape[0], -1)


def extractor_id(name: str, extractor: nn.Module) -> str:
    """An extractor's name and a digest of its weights: which features a FID was computed in."""
    digest = hashlib.sha256(name.encode())
    for key, value in extractor.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return f"{name}:{digest.hexdigest()[:16]}"


def _batches(arrays: np.ndarray, as_float: bool, batch: int = 128):
    for i in range(0, len(arrays), batch):
        chunk = torch.from_numpy(np.array(arrays[i:i + batch])).unsqueeze(1)
        yield chunk.float().div_(255.0) if as_float else chunk


@torch.no_grad()
def features(arrays: np.ndarray, extractor: nn.Module, name: str) -> torch.Tensor:
    """(N, D) features of uint8 patches, as FID/KID compute them."""
    as_float = name != "inception"
    return torch.cat([extractor(chunk) for chunk in _batches(arrays, as_float)]).flatten(1)


@torch.no_grad()
def gan_scores(real: np.ndarray, fake: np.ndarray, extractor: nn.Module, name: str,
               kid_subsets: int = 100, manifold: bool = True) -> dict:
    """FID and unbiased KID between uint8 patch sets, with the extractor's name attached; with
    ``manifold``, also precision, recall and coverage in the same features
    (:mod:`smh_ml.synthetic.coverage`), which tell a collapsed generator from a good one."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError("FID/KID need at least two real and two generated patches")
    as_float = name != "inception"  # our extractors take [0, 1] floats; torch-fidelity's takes uint8
    subset = min(1000, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=extractor, normalize=as_float, reset_real_features=True)
    kid = KernelInceptionDistance(feature=extractor, normalize=as_float, subsets=kid_subsets,
                                  subset_size=subset)
    for metric in (fid, kid):
        for chunk in _batches(real, as_float):
            metric.update(chunk, real=True)
        for chunk in _batches(fake, as_float):
            metric.update(chunk, real=False)
    kid_mean, kid_std = kid.compute()
    scores = {"extractor": name, "fid": float(fid.compute()), "kid_mean": float(kid_mean),
              "kid_std": float(kid_std), "n_real": int(len(real)), "n_fake": int(len(fake))}
    if manifold:
        scores |= manifold_scores(features(real, extractor, name), features(fake, extractor, name))
    return scores


def extractor_for(name: str, domain_model: nn.Module | None = None,
                  inception_weights: Path | str | None = None) -> nn.Module:
    if name == "domain":
        if domain_model is None:
            raise ValueError("the domain extractor needs a trained patch classifier")
        return DomainFeatures(domain_model)
    if name in ("imagenet", IMAGENET_NAME):
        return ImageNetFeatures()
    if name == "inception":
        if inception_weights is None:
            raise ValueError("the inception extractor needs a local weights file path")
        return GreyToInception(inception_weights)
    raise KeyError(f"unknown feature extractor {name!r}; known: {', '.join(EXTRACTORS)}")
