"""Split ORIGINAL captures into train and test before anything else.

The paper tests on whole original images; so a test capture never contributes a patch, an
augmented copy or GAN training data to any training set. Identical files (same content hash)
always land in the same split, so a duplicate cannot leak across.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_by_capture(manifest: pd.DataFrame, test_fraction: float, seed: int = 0) -> pd.Series:
    """A ``train``/``test`` label per manifest row, stratified by class.

    Each class with at least two distinct captures gets at least one test and one train
    capture; rounding follows ``test_fraction`` otherwise.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=manifest.index, dtype=object)
    groups = manifest["content_hash"].fillna(manifest["path"])
    for label in sorted(manifest["label"].unique()):
        rows = manifest.index[manifest["label"] == label]
        keys = np.array(sorted(groups.loc[rows].unique()))
        rng.shuffle(keys)
        n_test = round(test_fraction * len(keys))
        if test_fraction > 0 and len(keys) >= 2:
            n_test = min(max(n_test, 1), len(keys) - 1)
        test_keys = set(keys[:n_test])
        split.loc[rows[groups.loc[rows].isin(test_keys)]] = "test"
    return split
