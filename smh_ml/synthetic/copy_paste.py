"""The training-free baseline a defect GAN must beat: real defect crops pasted onto clean patches.

The same crops the class's GAN learns (:func:`smh_ml.synthetic.defects.defect_crops`, TRAIN
captures only), under the same flips, scales and blend (:func:`smh_ml.synthetic.blend.composite`):
the one difference from P-GAN is where the defect comes from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from smh_ml.config.schema import AugmentConfig, Profile
from smh_ml.data.datasets import PatchSet, TrainingSet
from smh_ml.synthetic.blend import composite
from smh_ml.synthetic.defects import GanData, augment_crops, gan_data
from smh_ml.synthetic.pgan import build_pgan, defect_classes, write_synthetic


def copy_paste(data: GanData, count: int, augment: AugmentConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` patches, each a real defect crop of the class (turned, flipped, scaled, its grey
    levels jittered) blended onto one of ``data.hosts``: (patches, masks)."""
    if not data.defects:
        raise ValueError("copy-paste needs defect crops (gan.source = 'defects')")
    crops = augment_crops(data.real, max(count, len(data.real)), augment, seed)
    return composite(crops, data.hosts, data.side, count, seed + 1)


def build_copy_paste(patch_set: PatchSet, profile: Profile, folder: Path | str | None = None) -> TrainingSet:
    """P-GAN's recipe with copy-paste patches in place of generated ones: each defect class with
    defect crops is topped up to ``gan.pgan_target`` by :func:`copy_paste`; a class without crops,
    or whose defects fill the patch, by traditional augmentation. ``folder``: each class's set is
    also written there as PNGs with its index (``<folder>/<class>``), marked ``copy-paste``."""
    cfg = profile.gan
    sets = {}
    for k, label in enumerate(defect_classes(patch_set, profile.clean_class)):
        data = gan_data(patch_set, label, profile)
        count = max(0, cfg.pgan_target - len(data.patches)) if data.defects and not data.skip else 0
        arrays = copy_paste(data, count, profile.augment, cfg.seed + k)[0] if count else data.patches[:0]
        index = write_synthetic(Path(folder) / label, label, arrays, "copy-paste") if folder is not None else \
            pd.DataFrame({"capture_id": [f"synthetic/copy-paste/{label}/{i}" for i in range(len(arrays))],
                          "gan": "copy-paste"})
        sets[label] = (arrays, index)
    return build_pgan(patch_set, sets, profile.clean_class, profile.augment, cfg.pgan_target)
