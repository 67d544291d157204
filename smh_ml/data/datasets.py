"""From a validated capture manifest to the patch sets of the paper (Table 4).

One pass over the captures (split by capture first) gives every capture's patches with
mask-derived labels and its whole image at the O-TA size. From the TRAIN captures only:
P-TA (patches topped up with traditional augmentation) and O-TA (whole images, likewise).
Arrays are stored as ``.npy`` (uint8) with a CSV index whose row i describes array row i.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from smh_ml.config.schema import AugmentConfig, Profile
from smh_ml.data.augment import augment_to_count
from smh_ml.data.captures import read_gray, read_mask
from smh_ml.data.inspection import product_box
from smh_ml.data.patching import (
    Geometry,
    capture_patches,
    derive_geometry,
    label_patches,
    patch_defect_stats,
    resize,
)
from smh_ml.data.recipe import Recipe, alternate_profile, profile_for_captures
from smh_ml.data.splits import split_by_capture
from smh_ml.io import atomic_dir, files_digest, load_npy, save_npy


@dataclass
class PatchSet:
    geometry: Geometry
    captures: pd.DataFrame
    """Manifest rows with ``split`` and the crop box of each capture."""
    patches: np.ndarray
    """(N, patch, patch) uint8: every tile of every capture, train and test."""
    index: pd.DataFrame
    """One row per patch: capture, split, row, col, label, defect fraction/share, usable."""
    images: np.ndarray
    """(M, h, w) uint8: every capture cropped and resized to the O-TA size."""


@dataclass
class TrainingSet:
    """P-TA patches or O-TA images: real training data plus augmented copies."""

    arrays: np.ndarray
    index: pd.DataFrame  # label, origin (real|augmented), source, capture_id


def usable_rows(manifest: pd.DataFrame) -> pd.Series:
    masks_ok = manifest["mask_path"].isna() | (
        manifest["mask_error"].isna()
        & (manifest["mask_height"] == manifest["height"])
        & (manifest["mask_width"] == manifest["width"]))
    return manifest["decodes"].astype(bool) & masks_ok.fillna(False).astype(bool)


def _process(row: pd.Series, geometry: Geometry, background_level: int, ota_size: tuple[int, int],
             convert: bool):
    """One capture's tiles, mask statistics and whole O-TA image, from one decode."""
    image = read_gray(row["path"], convert=convert)
    top, bottom, left, right = box = (row["crop_top"], row["crop_bottom"], row["crop_left"], row["crop_right"])
    patches = capture_patches(image, geometry, background_level, box)
    whole = resize(image[top:bottom, left:right], ota_size)
    fraction = share = None
    if isinstance(row["mask_path"], str):
        mask = read_mask(row["mask_path"])[top:bottom, left:right]
        fraction, share = patch_defect_stats(mask, geometry)
    return patches, fraction, share, whole


def build_patch_set(manifest: pd.DataFrame, profile: Profile, workers: int | None = None,
                    boxes: np.ndarray | None = None) -> PatchSet:
    """Split by capture, crop, derive the geometry (Eq. 5-7) unless fixed, and cut patches.
    ``boxes``: each manifest row's crop box when already measured (smh_ml.data.recipe), so a
    capture is not decoded twice to find it."""
    bad = manifest[~usable_rows(manifest)]
    if len(bad):
        listing = "; ".join(
            f"{r.path}: " + next((x for x in (r.error, r.mask_error) if isinstance(x, str)),
                                 "mask size differs from image")
            for r in bad.head(10).itertuples())
        raise ValueError(f"{len(bad)} capture(s) cannot be patched; validate the manifest "
                         f"first. {listing}")
    cfg = profile.patching
    captures = manifest.reset_index(drop=True).copy()
    captures["split"] = split_by_capture(captures, profile.split.test_fraction, profile.split.seed)
    workers = workers or min(4, os.cpu_count() or 1)
    if boxes is None:
        with ThreadPoolExecutor(workers) as pool:
            boxes = list(pool.map(lambda r: product_box(r["path"], cfg.background_level),
                                  (row for _, row in captures.iterrows())))
    captures[["crop_top", "crop_bottom", "crop_left", "crop_right"]] = np.array(boxes, dtype=np.int64)
    if cfg.image_size is not None:
        geometry = Geometry.from_size(tuple(cfg.image_size), cfg.patch)
    else:
        geometry = derive_geometry(captures["crop_bottom"] - captures["crop_top"],
                                   captures["crop_right"] - captures["crop_left"],
                                   cfg.patch, cfg.tiles)
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda r: _process(r, geometry, cfg.background_level, profile.augment.ota_size,
                                                    profile.validation.convert_color),
                                (row for _, row in captures.iterrows())))
    rows, patch_arrays, wholes = [], [], []
    for ci, (row, (patches, fraction, share, whole)) in enumerate(zip(captures.itertuples(), results)):
        n = len(patches)
        if fraction is None and row.label != profile.clean_class and n == 1:
            # one tile is the whole capture: it takes the capture's label, mask or not
            labels, usable, reasons = [row.label], [True], ["whole capture without mask"]
        elif fraction is None and row.label != profile.clean_class:
            labels, usable = [row.label] * n, [False] * n
            reasons = ["defect capture without mask: patches cannot be labelled"] * n
        else:
            frac = fraction if fraction is not None else np.zeros(n)
            labels, usable, reasons = label_patches(
                row.label, profile.clean_class, frac, share if share is not None else np.zeros(n),
                cfg.label_min_fraction, cfg.label_min_share)
        for t in range(n):
            rows.append({
                "capture_id": row.capture_id, "capture_index": ci, "split": row.split,
                "row": t // geometry.cols, "col": t % geometry.cols, "label": labels[t],
                "capture_label": row.label,
                "defect_fraction": float(fraction[t]) if fraction is not None else 0.0,
                "defect_share": float(share[t]) if share is not None else 0.0,
                "usable": usable[t], "reason": reasons[t]})
        patch_arrays.append(patches)
        wholes.append(whole)
    index = pd.DataFrame(rows)
    index.insert(0, "patch_index", np.arange(len(index)))
    return PatchSet(geometry, captures, np.concatenate(patch_arrays), index, np.stack(wholes))


def top_up(arrays: np.ndarray, meta: pd.DataFrame, target: int | None, cap: int | None,
           augment: AugmentConfig, seed: int) -> TrainingSet:
    """Keep at most ``cap`` real items (random subset), then augment up to ``target``."""
    rng = np.random.default_rng(seed)
    if cap is not None and len(meta) > cap:
        meta = meta.iloc[np.sort(rng.choice(len(meta), cap, replace=False))]
    real = arrays[meta["source"].to_numpy()]
    parts, frames = [real], [meta.assign(origin="real")]
    if target is not None and len(real) < target:
        extra, src = augment_to_count(real, target, augment.brightness, augment.contrast, seed)
        parts.append(extra)
        frames.append(meta.iloc[src].assign(origin="augmented"))
    return TrainingSet(np.concatenate(parts), pd.concat(frames, ignore_index=True))


def train_patches_by_class(patch_set: PatchSet) -> Iterator[tuple[int, str, pd.DataFrame]]:
    """The usable TRAIN patches class by class, in name order: (the class's position, which
    seeds its augmentation; its label; the ``meta`` that :func:`top_up` takes)."""
    train = patch_set.index[(patch_set.index["split"] == "train") & patch_set.index["usable"]]
    for k, label in enumerate(sorted(train["label"].unique())):
        rows = train[train["label"] == label]
        yield k, label, pd.DataFrame({"label": label, "source": rows["patch_index"].to_numpy(),
                                      "capture_id": rows["capture_id"].to_numpy()})


def concat_sets(sets: list[TrainingSet]) -> TrainingSet:
    return TrainingSet(np.concatenate([s.arrays for s in sets]), pd.concat([s.index for s in sets], ignore_index=True))


def build_pta(patch_set: PatchSet, clean_class: str, augment: AugmentConfig) -> TrainingSet:
    """P-TA: usable TRAIN patches; clean capped, each defect class topped up to its target."""
    return concat_sets([
        top_up(patch_set.patches, meta, None if label == clean_class else augment.pta_target,
               augment.max_clean_patches if label == clean_class else None, augment, augment.seed + k)
        for k, label, meta in train_patches_by_class(patch_set)])


def build_ota(patch_set: PatchSet, augment: AugmentConfig) -> TrainingSet:
    """O-TA: TRAIN captures as whole images, every class topped up to ``ota_target``."""
    train = patch_set.captures[patch_set.captures["split"] == "train"]
    sets = []
    for k, label in enumerate(sorted(train["label"].unique())):
        rows = train[train["label"] == label]
        meta = pd.DataFrame({"label": label, "source": rows.index.to_numpy(),
                             "capture_id": rows["capture_id"].to_numpy()})
        sets.append(top_up(patch_set.images, meta, augment.ota_target, None, augment, augment.seed + k))
    return concat_sets(sets)


def summary(patch_set: PatchSet, pta: TrainingSet, ota: TrainingSet) -> dict:
    index = patch_set.index
    usable = index[index["usable"]]
    return {
        "geometry": patch_set.geometry.to_dict() | {"size": list(patch_set.geometry.size)},
        "captures": {split: {str(k): int(v) for k, v in
                             patch_set.captures[patch_set.captures["split"] == split]
                             ["label"].value_counts().sort_index().items()}
                     for split in ("train", "test")},
        "patches": {split: {str(k): int(v) for k, v in
                            usable[usable["split"] == split]["label"].value_counts()
                            .sort_index().items()} for split in ("train", "test")},
        "ambiguous_patches": int((~index["usable"]).sum()),
        "pta": {str(k): int(v) for k, v in pta.index["label"].value_counts().sort_index().items()},
        "ota": {str(k): int(v) for k, v in ota.index["label"].value_counts().sort_index().items()},
    }


# The profile sections that shape a patch folder: a folder built under other values of these
# holds other patches or other training sets.
DATA_SECTIONS = ("clean_class", "patching", "split", "augment")


def data_settings(profile: Profile) -> dict:
    """The profile's :data:`DATA_SECTIONS`, as they read back from JSON."""
    return json.loads(json.dumps({k: v for k, v in profile.to_dict().items() if k in DATA_SECTIONS}))


ALTERNATE = "alternate"
"""Subfolder of a patch folder holding a close call's other geometry (smh_ml.data.recipe)."""


@dataclass
class Datasets:
    """What one patch folder holds: the patch set, P-TA and O-TA under ``profile``; for
    ``auto``, the recipe, and on a close call the other geometry's datasets."""

    profile: Profile
    patch_set: PatchSet
    pta: TrainingSet
    ota: TrainingSet
    recipe: Recipe | None = None
    alternate: Datasets | None = None

    def all(self) -> list[Datasets]:
        return [self] if self.alternate is None else [self, self.alternate]


def build_datasets(manifest: pd.DataFrame, profile: Profile) -> Datasets:
    """The patch folder's content for ``profile`` (``auto``: the recipe's geometry, and on a
    close call the other one too, from the same crop boxes and the same split)."""
    prof, recipe, boxes = profile_for_captures(profile, manifest)

    def cut(p: Profile) -> Datasets:
        patch_set = build_patch_set(manifest, p, boxes=boxes)
        return Datasets(p, patch_set, build_pta(patch_set, p.clean_class, p.augment), build_ota(patch_set, p.augment))

    built = cut(prof)
    built.recipe = recipe
    other = alternate_profile(prof, recipe) if recipe is not None else None
    if other is not None:
        built.alternate = cut(other)
    return built


def save_datasets(out: Path | str, patch_set: PatchSet, pta: TrainingSet, ota: TrainingSet,
                  profile: Profile | None = None, recipe: dict | None = None,
                  alternate: Datasets | None = None) -> dict:
    """Write everything to ``out`` atomically (the previous good folder survives a failure).
    With ``profile``, ``profile.json`` records its data sections (see :func:`check_built_with`)
    and the whole profile (``resolved``: what later stages run under), with ``recipe``, the
    measurements and reasons of the recipe from the data (smh_ml.data.recipe). ``alternate``
    goes to ``out/alternate/``, a patch folder of its own, in the same atomic write."""
    stats = summary(patch_set, pta, ota)
    with atomic_dir(Path(out)) as tmp:
        _write_folder(tmp, patch_set, pta, ota, profile, recipe, stats)
        if alternate is not None:
            stats["alternate"] = summary(alternate.patch_set, alternate.pta, alternate.ota)
            (tmp / ALTERNATE).mkdir()
            _write_folder(tmp / ALTERNATE, alternate.patch_set, alternate.pta, alternate.ota, alternate.profile,
                          None, stats["alternate"])
    return stats


def save_built(out: Path | str, built: Datasets) -> dict:
    """:func:`save_datasets` of :func:`build_datasets`'s result."""
    return save_datasets(out, built.patch_set, built.pta, built.ota, built.profile,
                         None if built.recipe is None else built.recipe.to_dict(), built.alternate)


def _write_folder(tmp: Path, patch_set: PatchSet, pta: TrainingSet, ota: TrainingSet, profile: Profile | None,
                  recipe: dict | None, stats: dict) -> None:
    if profile is not None:
        record = {"name": profile.name, **data_settings(profile), "resolved": profile.to_dict()}
        if recipe is not None:
            record["recipe"] = recipe
        (tmp / "profile.json").write_text(json.dumps(record, indent=1) + "\n")
    (tmp / "geometry.json").write_text(json.dumps(patch_set.geometry.to_dict()) + "\n")
    patch_set.captures.to_csv(tmp / "captures.csv", index=False)
    patch_set.index.to_csv(tmp / "patch_index.csv", index=False)
    save_npy(tmp / "patches.npy", patch_set.patches)
    save_npy(tmp / "images.npy", patch_set.images)
    for name, ts in (("pta", pta), ("ota", ota)):
        (tmp / name).mkdir()
        save_npy(tmp / name / "arrays.npy", ts.arrays)
        ts.index.to_csv(tmp / name / "index.csv", index=False)
    (tmp / "summary.json").write_text(json.dumps(stats, indent=2) + "\n")


def load_captures(folder: Path | str) -> pd.DataFrame:
    """The captures table of a patch-set folder (split, label, path), without its arrays."""
    return pd.read_csv(Path(folder) / "captures.csv")


def load_patch_set(folder: Path | str) -> PatchSet:
    folder = Path(folder)
    geometry = Geometry(**json.loads((folder / "geometry.json").read_text()))
    return PatchSet(geometry, load_captures(folder),
                    load_npy(folder / "patches.npy"), pd.read_csv(folder / "patch_index.csv"),
                    load_npy(folder / "images.npy"))


def load_training_set(folder: Path | str, name: str) -> TrainingSet:
    folder = Path(folder) / name
    return TrainingSet(load_npy(folder / "arrays.npy"), pd.read_csv(folder / "index.csv"))


def patch_set_id(folder: Path | str) -> str:
    """Content id of a patch folder's geometry, captures (with split) and patch labels."""
    folder = Path(folder)
    return files_digest([folder / "geometry.json", folder / "captures.csv", folder / "patch_index.csv"])


def training_set_id(folder: Path | str, name: str) -> str:
    """Content id of the training set ``name`` (pta, ota, pgan) under ``folder``."""
    folder = Path(folder) / name
    return files_digest([folder / "arrays.npy", folder / "index.csv"])


def check_built_with(folder: Path | str, profile: Profile) -> bool:
    """Raise ValueError, naming ``folder/profile.json`` and the differing keys, when the patch
    folder was built under other data settings than ``profile``'s. Returns False (nothing to
    check) for a folder written without a profile record."""
    path = Path(folder) / "profile.json"
    if not path.is_file():
        return False
    built = json.loads(path.read_text())
    wanted = data_settings(profile)
    differ = []
    for section in DATA_SECTIONS:
        have, want = built.get(section), wanted[section]
        if isinstance(want, dict) and isinstance(have, dict):
            differ += [f"{section}.{k}: {have.get(k)!r} (folder) != {v!r} ({profile.name})"
                       for k, v in want.items() if have.get(k) != v]
        elif have != want:
            differ.append(f"{section}: {have!r} (folder) != {want!r} ({profile.name})")
    if differ:
        raise ValueError(f"{path}: the patch folder was built with profile {built.get('name')!r}, whose data "
                         f"settings differ from profile {profile.name!r}: " + "; ".join(differ)
                         + f". Rebuild it under {profile.name!r}: smh-ml patches <captures> {folder} "
                         "--profile <name> [--set section.key=value ...]")
    return True
