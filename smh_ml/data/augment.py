"""Traditional augmentation (paper V-A): random flips, brightness and contrast.

No rotation and no crop: they change a defect's shape. Used to build the O-TA (whole
images) and P-TA (patches) sets up to target counts per class, as in Table 4.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2


def traditional_transform(brightness: float, contrast: float) -> v2.Compose:
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=brightness, contrast=contrast),
    ])


def augment_to_count(images: np.ndarray, target: int, brightness: float, contrast: float,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Top ``images`` (N, H, W) uint8 up to ``target`` with augmented copies.

    Returns the new copies only, (target - N, H, W), and the index of the source image of
    each copy; sources are used round-robin in a seeded random order so every original is
    augmented about equally. When N >= target nothing is added.
    """
    count = len(images)
    if count == 0:
        raise ValueError("cannot augment an empty set")
    missing = max(0, target - count)
    if missing == 0:
        return images[:0].copy(), np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(count) for _ in range(missing // count + 1)])
    sources = order[:missing]
    transform = traditional_transform(brightness, contrast)
    out = np.empty((missing, *images.shape[1:]), dtype=np.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, src in enumerate(sources):
            tensor = torch.from_numpy(np.ascontiguousarray(images[src]))[None]
            out[i] = transform(tensor)[0].numpy()
    return out, sources.astype(np.int64)
