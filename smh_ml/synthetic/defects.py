"""What a defect GAN learns: crops centred on each defect of a class's TRAIN captures.

A capture is seen as the classifier sees it (product box cropped, resized to the geometry's
size), so a crop of ``side`` px there is at the patch scale. Each connected region of the
capture's mask (a painted mask or filled boxes) gives one crop of the class's side, centred on
the region and clamped inside the capture, with the region's mask beside it. Crops are
resized to the GAN's side (:func:`crop_resolution`); the second channel is the mask, 255
wherever the shrunk pixel holds any defect, so a 1-px crack is not lost. Test captures never
give a crop; each crop keeps the id of its capture, so a copy-paste patch of a validation
capture's defect leaves training with that capture (:func:`smh_ml.training.loop.training_rows`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd

from smh_ml.config.schema import AugmentConfig, GanConfig, Profile
from smh_ml.data.captures import read_gray, read_mask
from smh_ml.data.datasets import PatchSet
from smh_ml.data.patching import resize
from smh_ml.synthetic.pgan import class_patches

log = logging.getLogger(__name__)

MIN_SIDE = 8
"""Smallest crop side at the patch scale: under 8 px a crop holds a pit and no surface."""
MIN_REGION = 2
"""Mask regions of fewer pixels at the patch scale are annotation specks, not defects."""
LARGE_DEFECT = 1.0
"""A class whose crop side reaches this share of the patch (the crop clamped to the whole patch)
has defects that fill the patch: a crop would be the patch itself, with no surface around the
defect, shrunk to the GAN's side and blown up again when placed. Such a class gets no GAN under
``defects`` (whole-patch GANs at such patch sides learned nothing in a CPU budget, docs/GAN.md):
traditional augmentation tops it up."""
MAX_PER_CAPTURE = 8
"""Crops kept per capture (its largest regions): a capture full of small pits must not make the class."""

CROP_RULES = {"min_side": MIN_SIDE, "min_region": MIN_REGION, "large_defect": LARGE_DEFECT,
              "max_per_capture": MAX_PER_CAPTURE, "mask": "any defect in a shrunk pixel"}
"""The rules above, which the GAN steps are stamped with: changing one trains the classes again."""


@dataclass
class GanData:
    """One class's GAN training data and what synthesis needs beside it."""

    real: np.ndarray
    """What the GAN learns: (N, P, P) patches, or (N, 2, c, c) defect crops and their masks."""
    patches: np.ndarray
    """The class's real TRAIN patches (N, P, P): the gate's diversity reference."""
    side: int = 0
    """Defects: the crop side at the patch scale (px of a patch)."""
    hosts: np.ndarray | None = None
    """Defects: the real TRAIN patches generated defects are placed on (clean ones, or the class's
    own when the set has no clean patches)."""
    skip: str = ""
    """Why no GAN is trained for the class (its defects fill the patch), or ""."""
    crop_captures: np.ndarray | None = None
    """Defects: the capture id of each crop of ``real``."""

    @property
    def defects(self) -> bool:
        return self.real.ndim == 4

    @property
    def images(self) -> np.ndarray:
        """The grey images the GAN learns (crops without their masks)."""
        return self.real[:, 0] if self.defects else self.real


def _scaled(row: pd.Series, size: tuple[int, int], convert: bool) -> tuple[np.ndarray, np.ndarray]:
    """A capture and its mask as the classifier sees them: cropped to the product, resized."""
    top, bottom, left, right = (int(row[k]) for k in ("crop_top", "crop_bottom", "crop_left", "crop_right"))
    image = resize(read_gray(row["path"], convert=convert)[top:bottom, left:right], size)
    mask = read_mask(row["mask_path"])[top:bottom, left:right].astype(np.uint8) * 255
    return image, resize(mask, size)


def _regions(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """(centre row, centre col, extent) of each mask region, largest first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    found = []
    for left, top, width, height, area in stats[1:count]:
        if area >= MIN_REGION:
            found.append((area, top + height // 2, left + width // 2, max(width, height)))
    return [(r, c, e) for _, r, c, e in sorted(found, reverse=True)[:MAX_PER_CAPTURE]]


def _window(centre: int, side: int, length: int) -> int:
    """Start of a ``side`` window centred on ``centre`` and kept inside ``[0, length)``."""
    return int(min(max(centre - side // 2, 0), max(length - side, 0)))


def crop_resolution(side: int, largest: int) -> int:
    """The GAN's side for crops of ``side`` px: the power of two that holds them (16 at least,
    the smallest SDG-GAN with a conv stage between up-samplings), at most ``largest``; small
    defects are not blown up to train a bigger GAN than their detail needs."""
    return int(max(16, min(largest, 2 ** math.ceil(math.log2(max(side, 1))))))


def defect_crops(patch_set: PatchSet, label: str, cfg: GanConfig, convert: bool = False
                 ) -> tuple[np.ndarray, int, np.ndarray]:
    """``label``'s defect crops from its TRAIN captures with masks, (N, 2, r, r) uint8 at the
    GAN's side r (:func:`crop_resolution`), the crop side at the patch scale and each crop's
    capture id. No capture with a mask: (0, 2, crop, crop), side 0 and no ids."""
    geometry = patch_set.geometry
    captures = patch_set.captures
    rows = captures[(captures["split"] == "train") & (captures["label"] == label) & captures["mask_path"].notna()]
    scaled = [(row["capture_id"], *_scaled(row, geometry.size, convert)) for _, row in rows.iterrows()]
    found = [(capture, image, mask, region) for capture, image, mask in scaled for region in _regions(mask)]
    if not found:
        return np.zeros((0, 2, cfg.crop, cfg.crop), np.uint8), 0, np.array([], dtype=object)
    extent = float(np.median([region[2] for *_, region in found]))
    side = int(min(geometry.patch, min(geometry.size), max(MIN_SIDE, round(cfg.crop_margin * extent))))
    resolution = crop_resolution(side, cfg.crop)
    crops = []
    for _, image, mask, (row, col, _) in found:
        top, left = _window(row, side, image.shape[0]), _window(col, side, image.shape[1])
        grey, shrunk = (cv2.resize(a[top:top + side, left:left + side], (resolution, resolution),
                                   interpolation=cv2.INTER_AREA) for a in (image, mask))
        crops.append(np.stack([grey, (shrunk > 0).astype(np.uint8) * 255]))
    return np.stack(crops).astype(np.uint8), side, np.array([capture for capture, *_ in found], dtype=object)


def augment_crops(crops: np.ndarray, target: int, augment: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``crops`` topped up to ``target`` with copies under the 8 flips and quarter turns (the
    mask turns with its crop) and the profile's brightness and contrast (the grey channel only),
    and the index of each one's original crop. A defect crop, unlike a capture, may turn: it is
    square and its surface direction is that of the patch it is placed on."""
    sources = np.arange(len(crops))
    if len(crops) == 0 or len(crops) >= target:
        return crops, sources
    rng = np.random.default_rng(seed)
    extra = rng.integers(0, len(crops), target - len(crops))
    copies = np.empty((len(extra), *crops.shape[1:]), np.uint8)
    for i, src in enumerate(extra):
        pair = np.rot90(crops[src], int(rng.integers(4)), axes=(1, 2))
        pair = pair[:, :, ::-1] if rng.random() < 0.5 else pair
        grey = pair[0].astype(np.float32)
        mean = grey.mean()
        grey = (grey - mean) * (1 + rng.uniform(-augment.contrast, augment.contrast)) + mean
        grey = grey * (1 + rng.uniform(-augment.brightness, augment.brightness))
        copies[i, 0] = np.clip(grey, 0, 255).round()
        copies[i, 1] = pair[1]
    return np.concatenate([crops, copies]), np.concatenate([sources, extra])


def host_patches(patch_set: PatchSet, label: str, clean_class: str) -> np.ndarray:
    """The real TRAIN patches a generated ``label`` defect is placed on: the clean ones, or the
    class's own when the set has no clean patches (a capture set of defects only; a second
    defect of the same class keeps the label)."""
    clean = class_patches(patch_set, clean_class)
    return clean if len(clean) else class_patches(patch_set, label)


def gan_data(patch_set: PatchSet, label: str, profile: Profile) -> GanData:
    """``label``'s GAN training data under ``profile.gan.source``. A class none of whose TRAIN
    captures has a mask gives no defect crop: its GAN learns its patches, as the paper's."""
    patches = class_patches(patch_set, label)
    if profile.gan.source != "defects":
        return GanData(patches, patches)
    crops, side, captures = defect_crops(patch_set, label, profile.gan, profile.validation.convert_color)
    if len(crops) == 0:
        log.warning("%s: no TRAIN capture with a defect mask: its GAN learns whole patches", label)
        return GanData(patches, patches)
    hosts = host_patches(patch_set, label, profile.clean_class)
    if len(hosts) == 0:
        reason = "no usable TRAIN patch to place a defect on: traditional augmentation instead"
        log.warning("%s: %s", label, reason)
        return GanData(crops, patches, side, None, reason, captures)
    if side >= patch_set.geometry.patch * LARGE_DEFECT:
        reason = (f"its defects fill the patch (crop side {side} of {patch_set.geometry.patch} px): no defect "
                  "to place on a clean patch, traditional augmentation instead")
        log.warning("%s: %s", label, reason)
        return GanData(crops, patches, side, None, reason, captures)
    return GanData(crops, patches, side, hosts, "", captures)
