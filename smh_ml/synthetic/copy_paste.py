"""The training-free baseline a defect GAN must beat: real defect crops pasted onto clean patches.

The same crops the class's GAN learns (:func:`smh_ml.synthetic.defects.defect_crops`, TRAIN
captures only), under the same flips, scales and blend (:func:`smh_ml.synthetic.blend.composite`):
the one difference from P-GAN is where the defect comes from.
"""

from __future__ import annotations

import numpy as np

from smh_ml.config.schema import AugmentConfig
from smh_ml.synthetic.blend import composite
from smh_ml.synthetic.defects import GanData, augment_crops


def copy_paste(data: GanData, count: int, augment: AugmentConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` patches, each a real defect crop of the class (turned, flipped, scaled, its grey
    levels jittered) blended onto one of ``data.hosts``: (patches, masks)."""
    if not data.defects:
        raise ValueError("copy-paste needs defect crops (gan.source = 'defects')")
    crops = augment_crops(data.real, max(count, len(data.real)), augment, seed)
    return composite(crops, data.hosts, data.side, count, seed + 1)
