"""The training-free baseline a defect GAN must beat: real defect crops pasted onto clean patches.

The same crops the class's GAN learns (:func:`smh_ml.synthetic.defects.defect_crops`, TRAIN
captures only), turned and jittered as the GAN's training copies are, then placed with the same
flips, scales and blend (:func:`smh_ml.synthetic.blend.composite`): real defects where P-GAN has
generated ones. Each patch carries the capture id of its crop, so training drops it with its
capture when that capture validates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from smh_ml.config.schema import AugmentConfig, Profile
from smh_ml.data.datasets import PatchSet, TrainingSet
from smh_ml.io import atomic_dir
from smh_ml.synthetic.blend import Blended, composite
from smh_ml.synthetic.defects import GanData, augment_crops, gan_data
from smh_ml.synthetic.pgan import build_pgan, defect_classes, write_synthetic


def copy_paste(data: GanData, count: int, augment: AugmentConfig, seed: int = 0) -> tuple[Blended, np.ndarray]:
    """``count`` patches, each a real defect crop of the class (turned, flipped, scaled, its grey
    levels jittered) blended onto one of ``data.hosts``, and each one's source capture id."""
    if not data.defects or data.hosts is None:
        raise ValueError("copy-paste needs defect crops and host patches (gan.source = 'defects')")
    crops, sources = augment_crops(data.real, max(count, len(data.real)), augment, seed)
    blended = composite(crops, data.hosts, data.side, count, seed + 1)
    return blended, data.crop_captures[sources[blended.sources]]


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
        if count:
            blended, captures = copy_paste(data, count, profile.augment, cfg.seed + k)
            arrays = blended.patches
        else:
            arrays, captures = data.patches[:0], np.array([], dtype=object)
        if folder is not None:
            with atomic_dir(Path(folder) / label) as tmp:
                index = write_synthetic(tmp, label, arrays, "copy-paste", captures)
        else:
            index = pd.DataFrame({"capture_id": captures, "gan": "copy-paste"})
        sets[label] = (arrays, index)
    return build_pgan(patch_set, sets, profile.clean_class, profile.augment, cfg.pgan_target)
