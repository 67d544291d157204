"""The recipe from the data: measure a capture set, then derive its geometry and candidates.

A user's capture set comes with no expert choice of profile. What decides whether whole
captures or tiles suit a set is measurable before any patch is cut: how many model-input
pixels the typical defect spans. A whole capture resized to ``WHOLE_SIDE`` keeps large
defects and their context (magnetic tile: breaks and frays across the tile); a 3584-px
line-scan frame resized that far shrinks a pit to a pixel, so tiles keep the native scale.

``measure_capture_set`` reads each capture's crop box (the product inside a dark field) and
its mask, never anything the labels do not already say; ``derive_recipe`` turns the figures
into a :class:`Recipe` with the reasons in words; ``resolve_profile`` builds the concrete
profile from the named presets (``whole`` or ``demo``) with the derived geometry, so those
presets are exactly what ``auto`` picks on the data they were tuned for.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smh_ml.config.overrides import apply_settings
from smh_ml.config.presets import get_profile
from smh_ml.config.schema import Profile, profile_from_dict
from smh_ml.data.inspection import inspect_product

WHOLE_SIDE = 256
"""Input side of a whole-capture model: EfficientNet-Lite0's ImageNet scale (224) rounded up
to a multiple of its stride 32."""
TILE_PATCH = 64
"""Patch side of the tile recipe: the paper's Inception-CNN learns 64-px tiles from scratch on
a CPU budget (docs/RESULTS.md)."""
KERNEL_PX = 3
"""Side of the first convolution's kernel in every candidate: a defect must cover one kernel
footprint of the first feature map to be told from pixel noise."""
AMBIGUOUS_FACTOR = 2.0
"""A whole-capture extent within this factor of the whole geometry's minimum is a close call:
the other geometry's first candidate is trained too, and the validation captures decide."""
TILE_RANGE = (4, 256)
"""Fewest and most tiles per capture (above 256, one capture is 256 forward passes)."""
WHOLE_CANDIDATES = ("efficientnet_lite0", "inception_cnn")
"""Whole captures: ImageNet EfficientNet-Lite0 first (it fits 256-px inputs in a few hundred
steps), the paper's Inception-CNN from scratch second when the budget allows it."""
TILE_CANDIDATES = ("inception_cnn", "baseline_cnn")
"""Tiles of 64 px: the paper's Inception-CNN and its baseline CNN, both from scratch
(EfficientNet-Lite0's ImageNet features do not carry to 64-px tiles: 66% on the simulated set)."""
BUDGET_MINUTES = 25.0
"""Training minutes of the candidates together, CV included, sized for 2 CPU cores."""


@dataclass(frozen=True)
class CaptureStats:
    """What the recipe reads off a capture set."""

    captures: int
    class_counts: dict[str, int]
    clean_captures: int
    height: float
    """Median crop height (product inside the dark field), pixels."""
    width: float
    aspect: float
    """Mean crop height over mean crop width (the paper's Eq. 5-7)."""
    background_share: float
    """Median share of a capture outside its crop box (the dark field of a line-scan camera)."""
    masked_defect_captures: int
    """Defect captures with a mask (pixel masks or boxes drawn as masks)."""
    defect_extent: dict[str, float] = field(default_factory=dict)
    """Per defect class, the median over its captures of the largest defect's size (geometric
    mean of its box sides) relative to the crop's (geometric mean of height and width)."""
    defect_area: dict[str, float] = field(default_factory=dict)
    """Per defect class, the median share of the crop that is defect."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Alternate:
    """The other geometry of a close call, trained beside the recipe's own candidates."""

    geometry: str
    patch: int
    tiles: int
    candidates: tuple[str, ...]
    defect_px: float


@dataclass(frozen=True)
class Recipe:
    """Geometry and candidates derived from :class:`CaptureStats`, with the reasons."""

    geometry: str
    """``whole`` (one tile: the capture) or ``tiles``."""
    patch: int
    tiles: int
    candidates: tuple[str, ...]
    defect_px: float
    """Model-input pixels spanned by the typical defect of the smallest-defect class."""
    ambiguous: bool
    reasons: tuple[str, ...]
    stats: CaptureStats
    alternate: Alternate | None = None
    """On a close call, the other geometry (its patch set is built beside this one's)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure_capture_set(manifest: pd.DataFrame, clean_class: str, background_level: int = 16,
                        workers: int | None = None) -> tuple[CaptureStats, np.ndarray]:
    """The set's :class:`CaptureStats` and every capture's crop box (top, bottom, left,
    right), from each capture's one inspection (smh_ml.data.inspection: validation's, when it
    ran first in this process); the patch set reuses the boxes."""
    rows = [row for _, row in manifest.reset_index(drop=True).iterrows()]
    with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        measured = list(pool.map(lambda r: inspect_product(r["path"], background_level, r.get("mask_path")), rows))
    boxes = np.array([m.box for m in measured], dtype=np.int64)
    heights = (boxes[:, 1] - boxes[:, 0]).astype(float)
    widths = (boxes[:, 3] - boxes[:, 2]).astype(float)
    full = (manifest["height"].to_numpy(float) * manifest["width"].to_numpy(float))
    labels = manifest["label"].to_numpy()
    extents = np.array([m.defect_extent for m in measured])
    areas = np.array([m.defect_area for m in measured])
    defect_extent, defect_area = {}, {}
    for label in sorted(set(labels) - {clean_class}):
        known = (labels == label) & np.isfinite(extents) & (extents > 0)
        if known.any():
            defect_extent[str(label)] = round(float(np.median(extents[known])), 5)
            defect_area[str(label)] = round(float(np.median(areas[known])), 6)
    counts = {str(k): int(v) for k, v in pd.Series(labels).value_counts().sort_index().items()}
    stats = CaptureStats(
        captures=len(manifest), class_counts=counts, clean_captures=int(counts.get(clean_class, 0)),
        height=float(np.median(heights)), width=float(np.median(widths)),
        aspect=round(float(heights.mean() / widths.mean()), 4),
        background_share=round(float(np.median(1.0 - heights * widths / full)), 4),
        masked_defect_captures=int(np.isfinite(extents[labels != clean_class]).sum()),
        defect_extent=defect_extent, defect_area=defect_area)
    return stats, boxes


def min_defect_px(arch: str) -> float:
    """Model-input pixels the typical defect must span for ``arch``: one first-layer kernel
    footprint after the stem's stride, from its card (6 px for EfficientNet-Lite0, whose stem
    halves its input; 3 px for the paper's CNNs, which keep full resolution to their first
    pooling)."""
    from smh_ml.models import get_card  # lazily: measuring a capture set needs no torch

    return float(KERNEL_PX * get_card(arch).stem_stride)


def _tile_count(extent: float, aspect: float, need_px: float) -> int:
    """Tiles of :data:`TILE_PATCH` px per capture for the typical defect to span ``need_px``:
    the capture is resized to about ``sqrt(tiles) * patch`` px a side."""
    need = (need_px / (TILE_PATCH * extent)) ** 2 if extent > 0 else TILE_RANGE[1]
    # the grid follows the aspect (Eq. 5-7): rows x cols may round above the count asked for
    tiles = int(min(max(math.ceil(need), TILE_RANGE[0]), TILE_RANGE[1]))
    cols = max(1, round(math.sqrt(tiles / max(aspect, 1e-6))))
    return max(1, round(aspect * cols)) * cols


def derive_recipe(stats: CaptureStats) -> Recipe:
    """Whole captures when the smallest-defect class's typical defect still spans
    :func:`min_defect_px` of the whole-capture model at :data:`WHOLE_SIDE`, else tiles fine
    enough that it spans the tile model's."""
    reasons = [f"{stats.captures} captures in {len(stats.class_counts)} classes "
               f"({', '.join(f'{k} {v}' for k, v in stats.class_counts.items())}); "
               f"median crop {stats.height:.0f} x {stats.width:.0f} px, aspect H:W {stats.aspect:.2f}, "
               f"background {stats.background_share:.0%} of a capture"]
    if stats.clean_captures == 0:
        reasons.append("no clean captures: the model decides among the defect classes it has")
    if not stats.defect_extent:
        extent = float("inf")  # only a whole capture takes its label without a mask
        reasons.append("no defect masks or boxes: tiles could not be labelled, so whole captures")
    else:
        smallest = min(stats.defect_extent, key=stats.defect_extent.get)
        extent = stats.defect_extent[smallest]
        reasons.append(f"smallest defects: {smallest}, typically {extent:.1%} of the capture's side "
                       f"({stats.defect_area[smallest]:.2%} of its area)")
    whole_px, whole_need = extent * WHOLE_SIDE, min_defect_px(WHOLE_CANDIDATES[0])
    if not stats.defect_extent:
        geometry, patch, tiles, candidates, defect_px = "whole", WHOLE_SIDE, 1, WHOLE_CANDIDATES, 0.0
    elif whole_px >= whole_need:
        geometry, patch, tiles, candidates, defect_px = "whole", WHOLE_SIDE, 1, WHOLE_CANDIDATES, whole_px
        reasons.append(f"whole captures at {WHOLE_SIDE} px: that defect spans {whole_px:.1f} px, at least the "
                       f"{whole_need:g} px {WHOLE_CANDIDATES[0]} needs, and the capture's context stays in one view")
    else:
        tile_need = min_defect_px(TILE_CANDIDATES[0])
        tiles = _tile_count(extent, stats.aspect, tile_need)
        geometry, patch, candidates = "tiles", TILE_PATCH, TILE_CANDIDATES
        defect_px = extent * TILE_PATCH * math.sqrt(tiles)
        reasons.append(f"tiles: a whole capture at {WHOLE_SIDE} px shrinks that defect to {whole_px:.1f} px "
                       f"(< {whole_need:g}); {tiles} tiles of {TILE_PATCH} px keep it at {defect_px:.1f} px "
                       f"(>= {tile_need:g} for {TILE_CANDIDATES[0]}, unless capped at {TILE_RANGE[1]} tiles)")
    ambiguous = bool(stats.defect_extent) and whole_need / AMBIGUOUS_FACTOR <= whole_px \
        < whole_need * AMBIGUOUS_FACTOR
    alternate = _alternate(geometry, extent, stats.aspect) if ambiguous else None
    if alternate is not None:
        reasons.append(f"a close call: {whole_px:.1f} px at {WHOLE_SIDE} px is within {AMBIGUOUS_FACTOR:g}x of "
                       f"{whole_need:g}, so {alternate.candidates[0]} on {alternate.geometry} "
                       f"({alternate.tiles} tile(s) of {alternate.patch} px, the defect at "
                       f"{alternate.defect_px:.1f} px) is trained beside them")
    reasons.append(f"candidates: {', '.join(candidates)}, chosen on validation captures within "
                   f"{BUDGET_MINUTES:g} min of training")
    return Recipe(geometry, patch, tiles, candidates, round(defect_px, 2), ambiguous, tuple(reasons), stats,
                  alternate)


def _alternate(geometry: str, extent: float, aspect: float) -> Alternate:
    """The other geometry of a close call, with its first candidate. Tiles beside whole
    captures are cut so that the defect spans :data:`AMBIGUOUS_FACTOR` times the tile model's
    minimum: clearly resolved, where the whole capture resolves it only just."""
    if geometry == "tiles":
        return Alternate("whole", WHOLE_SIDE, 1, WHOLE_CANDIDATES[:1], round(extent * WHOLE_SIDE, 2))
    tiles = _tile_count(extent, aspect, AMBIGUOUS_FACTOR * min_defect_px(TILE_CANDIDATES[0]))
    return Alternate("tiles", TILE_PATCH, tiles, TILE_CANDIDATES[:1], round(extent * TILE_PATCH * math.sqrt(tiles), 2))


AUTO = "auto"


def is_auto(profile: Profile) -> bool:
    """Whether ``profile`` is the recipe-from-the-data default, still to be resolved."""
    return profile.name.split("+", 1)[0] == AUTO


def resolve_profile(profile: Profile, recipe: Recipe) -> Profile:
    """The concrete profile ``auto`` stands for on a set with ``recipe``: the named preset of
    that geometry (``whole`` or ``demo``) with the derived tile count, candidates and minute
    budget, then the user's own ``--set`` overrides on top. The name stays ``profile``'s, so
    artifacts and runs keep one place; the description gives the choice."""
    preset = get_profile("whole" if recipe.geometry == "whole" else "demo")
    train = dataclasses.replace(preset.train, arch=recipe.candidates[0], candidates=recipe.candidates,
                                budget_minutes=BUDGET_MINUTES)
    resolved = dataclasses.replace(
        preset, name=AUTO, description=f"auto: {recipe.geometry}, {recipe.tiles} tile(s) of {recipe.patch} px. "
                                       + " ".join(f"{r}." for r in recipe.reasons),
        patching=dataclasses.replace(preset.patching, patch=recipe.patch, tiles=recipe.tiles),
        validation=profile.validation, train=train, settings=())
    return apply_settings(resolved, profile.settings)


def alternate_profile(profile: Profile, recipe: Recipe) -> Profile | None:
    """The profile of a close call's other geometry (None when the call was not close):
    :func:`resolve_profile` of that geometry, with the split, validation fraction and seed of
    ``profile`` (the resolved recipe's own), so both patch sets hold the same test and
    validation captures and the validation accuracies compare."""
    alt = recipe.alternate
    if alt is None:
        return None
    other = dataclasses.replace(recipe, geometry=alt.geometry, patch=alt.patch, tiles=alt.tiles,
                                candidates=alt.candidates, alternate=None)
    resolved = resolve_profile(dataclasses.replace(profile, settings=()), other)
    train = dataclasses.replace(resolved.train, val_fraction=profile.train.val_fraction, seed=profile.train.seed)
    return dataclasses.replace(resolved, split=profile.split, train=train)


def profile_for_captures(profile: Profile, manifest: pd.DataFrame
                         ) -> tuple[Profile, Recipe | None, np.ndarray | None]:
    """What patching runs under: for ``auto``, the profile resolved from the measured captures,
    with the recipe and the crop boxes (for :func:`smh_ml.data.datasets.build_patch_set`); a named
    profile as it is, with neither."""
    if not is_auto(profile):
        return profile, None, None
    stats, boxes = measure_capture_set(manifest, profile.clean_class, profile.patching.background_level)
    recipe = derive_recipe(stats)
    return resolve_profile(profile, recipe), recipe, boxes


def recorded_profile(folder: Path | str) -> Profile:
    """The profile a patch folder was built under, from its ``profile.json``: the full
    resolved profile, or for a folder recorded with data sections only, the named preset it
    names. A clear error names the file when the folder has no record."""
    path = Path(folder) / "profile.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no profile record; rebuild the folder with 'smh-ml patches' "
                                "or name a profile with --profile")
    record = json.loads(path.read_text())
    if "resolved" in record:
        return profile_from_dict(record["resolved"])
    return get_profile(str(record.get("name", "")).split("+", 1)[0])


def recorded_recipe(folder: Path | str) -> dict | None:
    """The recipe record of a patch folder built by ``auto`` (None for a named profile)."""
    path = Path(folder) / "profile.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("recipe")


def profile_for_folder(profile: Profile, folder: Path | str) -> Profile:
    """What a stage after patching runs under: for ``auto``, the profile recorded in the patch
    folder with the caller's ``--set`` overrides on top; a named profile as it is."""
    if not is_auto(profile):
        return profile
    recorded = recorded_profile(folder)
    # the recorded values already hold the settings it was built with; the name drops them so
    # that the caller's own settings name it as they name the folder's storage (auto+...)
    return apply_settings(dataclasses.replace(recorded, name=recorded.name.split("+", 1)[0], settings=()),
                          profile.settings)
