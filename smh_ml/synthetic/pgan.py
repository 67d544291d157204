"""Synthetic patch sets from the per-class GANs, and the P-GAN training set (Table 4).

Synthetic patches are saved as PNG images with an index that marks them ``synthetic`` and
names the GAN that made them. They only ever enter TRAINING sets: validation folds are
also scored on real patches alone, and the test set is whole original captures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from smh_ml.config.schema import AugmentConfig
from smh_ml.data.datasets import PatchSet, TrainingSet, concat_sets, top_up, train_patches_by_class
from smh_ml.io import atomic_dir, save_npy


def class_patches(patch_set: PatchSet, label: str) -> np.ndarray:
    """The usable TRAIN patches of ``label`` (never a test capture's)."""
    index = patch_set.index
    rows = index[(index["split"] == "train") & index["usable"] & (index["label"] == label)]
    return patch_set.patches[rows["patch_index"].to_numpy()]


def defect_classes(patch_set: PatchSet, clean_class: str) -> list[str]:
    return sorted(set(patch_set.captures["label"]) - {clean_class})


def write_synthetic(folder: Path, label: str, arrays: np.ndarray, gan: str,
                    captures: np.ndarray | None = None) -> pd.DataFrame:
    """Write ``arrays`` as PNGs into ``folder`` and return (and save) their index. ``captures``:
    the real capture each patch was made from (copy-paste), kept as its ``capture_id`` so that
    training drops it with that capture; a generated patch has none of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, array in enumerate(arrays):
        name = f"syn-{gan}-{label}-{i:05d}.png"
        Image.fromarray(array).save(folder / name)
        rows.append({"file": name, "label": label, "origin": "synthetic", "gan": gan,
                     "capture_id": str(captures[i]) if captures is not None else f"synthetic/{gan}/{label}/{i}"})
    index = pd.DataFrame(rows, columns=["file", "label", "origin", "gan", "capture_id"])
    index.to_csv(folder / "index.csv", index=False)
    return index


def missing_synthetic(gan_dir: Path | str, classes: list[str]) -> list[str]:
    """Defect classes with no synthetic set in ``gan_dir/<class>/synthetic`` (a run killed
    between training a class's GAN and writing its set, or a class never trained)."""
    return sorted(c for c in classes if not (Path(gan_dir) / c / "synthetic" / "index.csv").is_file())


def read_synthetic(folder: Path | str) -> tuple[np.ndarray, pd.DataFrame]:
    folder = Path(folder)
    index = pd.read_csv(folder / "index.csv")
    arrays = [np.asarray(Image.open(folder / f)) for f in index["file"]]
    return (np.stack(arrays) if arrays else np.zeros((0, 0, 0), np.uint8)), index


def build_pgan(patch_set: PatchSet, synthetic: dict[str, tuple[np.ndarray, pd.DataFrame]],
               clean_class: str, augment: AugmentConfig, pgan_target: int) -> TrainingSet:
    """P-GAN: usable TRAIN patches (clean capped as in P-TA) plus each defect class's
    synthetic patches (already sized to reach ``pgan_target``). A defect class with too
    few (its GAN's patches were refused by the quality gate, or it has no GAN yet) is topped
    up to the target by traditional augmentation instead, marked ``augmented``."""
    sets = []
    for k, label, meta in train_patches_by_class(patch_set):
        clean = label == clean_class
        arrays, syn_index = synthetic.get(label, (None, pd.DataFrame()))
        target = None if clean else pgan_target - len(syn_index)
        sets.append(top_up(patch_set.patches, meta, target, augment.max_clean_patches if clean else None,
                           augment, augment.seed + k))
        if len(syn_index):
            sets.append(TrainingSet(arrays, pd.DataFrame({
                "label": label, "source": -1, "capture_id": syn_index["capture_id"], "origin": "synthetic",
                "gan": syn_index["gan"]})))
    return concat_sets(sets)


def save_training_set(folder: Path | str, training_set: TrainingSet) -> Path:
    """``folder`` (e.g. ``<out>/pgan``) holding ``arrays.npy`` and ``index.csv``, replaced whole
    (atomically), as :func:`smh_ml.data.datasets.load_training_set` reads it."""
    with atomic_dir(Path(folder)) as tmp:
        save_npy(tmp / "arrays.npy", training_set.arrays)
        training_set.index.to_csv(tmp / "index.csv", index=False)
    return Path(folder)
