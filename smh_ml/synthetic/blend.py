"""Defects placed on real surfaces: a defect crop and its mask blended onto a clean patch.

Every blended patch holds one defect, takes its class and keeps the mask where it was placed.
The defect's difference from its own surrounding surface is added under the feathered mask, so
a dark blowhole stays dark on a brighter tile and the host's texture shows through around it.

Not Poisson blending: OpenCV's ``seamlessClone`` (4.14) returned the host unchanged for an 8-px
crop, and for a 6-px dark square in a 16-px crop it changed the host by 0 to 133 grey levels
depending on the clone region and the place (six combinations tried), and the defects of
line-scan captures are that small at the patch scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FEATHER = 0.08
"""Gaussian sigma of the mask's edge as a share of the crop side: a hard edge is a cue no real
defect has."""


SCALE = (0.8, 1.25)
"""Range of the random scale of a placed defect around its class's crop side."""


def _alpha(mask: np.ndarray) -> np.ndarray:
    """The mask with a soft edge outside it, full strength inside."""
    soft = mask.astype(np.float32) / 255.0
    return np.clip(np.maximum(soft, cv2.GaussianBlur(soft, (0, 0), max(0.5, FEATHER * mask.shape[0]))), 0.0, 1.0)


def paste(host: np.ndarray, crop: np.ndarray, mask: np.ndarray, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """``host`` (P, P) uint8 with ``crop`` (S, S) uint8 and its ``mask`` (S, S, 0-255) placed at
    (``top``, ``left``); returns the patch and its (P, P) uint8 mask (255 = defect)."""
    side = crop.shape[0]
    if top < 0 or left < 0 or top + side > host.shape[0] or left + side > host.shape[1]:
        raise ValueError(f"a {side}-px crop at ({top}, {left}) does not fit a {host.shape} patch")
    out = host.copy()
    placed = np.zeros(host.shape, np.uint8)
    defect = mask > 127
    placed[top:top + side, left:left + side] = defect * 255
    if not defect.any():
        return out, placed
    alpha = _alpha(mask)
    surround = crop[~defect].astype(np.float32).mean() if (~defect).any() else float(crop.mean())
    region = out[top:top + side, left:left + side].astype(np.float32)
    region += alpha * (crop.astype(np.float32) - surround)
    out[top:top + side, left:left + side] = np.clip(region, 0, 255).round().astype(np.uint8)
    return out, placed


@dataclass
class Blended:
    patches: np.ndarray
    """(count, P, P) uint8, one defect each."""
    masks: np.ndarray
    """(count, P, P) uint8, 255 where the defect was placed."""
    sources: np.ndarray
    """The index of the crop each patch holds."""


def _resized(pair: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    return tuple(cv2.resize(np.ascontiguousarray(a), (size, size), interpolation=cv2.INTER_LINEAR) for a in pair)


def composite(crops: np.ndarray, hosts: np.ndarray, side: int, count: int, seed: int = 0) -> Blended:
    """``count`` patches: crops (N, 2, c, c) resized to about ``side`` px (:data:`SCALE`), each
    under a random flip, placed at a uniform position on a random host (M, P, P). Crops are taken
    in a shuffled cycle, so each is used about equally; one whose mask vanishes at the drawn
    size is passed over for the next (an empty one would label a clean patch a defect)."""
    patch = hosts.shape[-1]
    if count and (len(crops) == 0 or len(hosts) == 0 or side < 1):
        raise ValueError(f"cannot blend {count} defects: {len(crops)} crops, {len(hosts)} host patches, side {side}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(crops)) for _ in range(count // max(len(crops), 1) + 2)]) \
        if count else np.zeros(0, np.int64)
    out = Blended(np.empty((count, patch, patch), np.uint8), np.empty((count, patch, patch), np.uint8),
                  np.empty(count, np.int64))
    cursor = 0
    for i in range(count):
        for _ in range(len(crops)):  # at most one pass over the crops for a non-empty mask
            source = int(order[cursor % len(order)])
            cursor += 1
            pair = crops[source]
            pair = pair[:, ::-1] if rng.random() < 0.5 else pair
            pair = pair[:, :, ::-1] if rng.random() < 0.5 else pair
            size = int(np.clip(round(side * rng.uniform(*SCALE)), 2, patch))
            grey, mask = _resized(pair, size)
            if (mask > 127).any():
                break
        top, left = (int(rng.integers(0, patch - size + 1)) for _ in range(2))
        out.patches[i], out.masks[i] = paste(hosts[rng.integers(len(hosts))], grey, mask, top, left)
        out.sources[i] = source
    return out


def placed_windows(crops: np.ndarray, hosts: np.ndarray, side: int, seed: int = 0) -> np.ndarray:
    """Each crop (N, 2, c, c) resized to ``side`` and blended onto a host at a place drawn from
    ``seed``, cut back out: (N, side, side), the defect as the classifier will see it. The same
    seed and count put real and generated crops on the same surfaces at the same places, so
    features compare the defects, not the surface around them in their crops."""
    patch = hosts.shape[-1]
    side = int(min(side, patch))
    rng = np.random.default_rng(seed)
    out = np.empty((len(crops), side, side), np.uint8)
    for i, pair in enumerate(crops):
        grey, mask = _resized(pair, side)
        host = hosts[rng.integers(len(hosts))]
        top, left = (int(rng.integers(0, patch - side + 1)) for _ in range(2))
        out[i] = paste(host, grey, mask, top, left)[0][top:top + side, left:left + side]
    return out
