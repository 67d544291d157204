"""The quality gate synthetic patches pass before they may enter a training set.

A GAN that collapsed draws blank squares, constant grey or one image over and over; such patches taught
earlier classifiers that "white square = scratch" (docs/RESULTS.md). The gate refuses a class's
synthetic set when too many patches are flat or saturated, when the set has no diversity (in
pixels, or in features: it covers few of the real samples), or when its FID to the class's real
patches is above the ceiling. A refused class is topped up by traditional augmentation of its
real patches instead (and reported so). A set refused for its FID alone passed the content
checks; it may still enter through the validation trial (:mod:`smh_ml.workflows.trial`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class GateSettings:
    min_std: float = 4.0
    """A patch whose grey levels vary less than this (std, 0-255) is flat."""
    max_saturated: float = 0.9
    """A patch with more than this share of pixels at 0 or 255 is blank."""
    max_bad_share: float = 0.1
    """The set fails when more than this share of its patches is flat or blank."""
    min_diversity: float = 0.25
    """Mean pixel std ACROSS patches over mean std WITHIN the real patches: below this the
    samples are (nearly) one image repeated."""
    min_recall: float | None = None
    """Smallest recall of the real samples by the generated ones in the FID extractor's
    features (:mod:`smh_ml.synthetic.coverage`); None: not used. A generator that draws one
    defect over and over on varied surfaces passes the pixel check above (the surfaces differ)
    and covers a few real defects only."""
    fid_ceiling: float | None = None
    """Largest FID to the real patches (any extractor, as named in the report); None: not used."""
    mask_range: tuple[float, float] = (0.005, 0.9)
    """A generated defect's mask must cover a share of its crop in this range: under it the
    generator drew surface and no defect, over it a blot."""


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    flat_share: float = 0.0
    blank_share: float = 0.0
    diversity: float = 0.0
    fid: float | None = None
    content_passed: bool = False
    """Not flat, not blank, not one image repeated: only the FID ceiling can have refused it."""
    maskless_share: float | None = None
    """Generated defects whose mask is out of :attr:`GateSettings.mask_range` (defect GANs only)."""
    recall: float | None = None
    """Recall of the real samples in the FID extractor's features (None: not scored)."""

    def to_dict(self) -> dict:
        return asdict(self)


def check_synthetic(fake: np.ndarray, real: np.ndarray, settings: GateSettings = GateSettings(),
                    fid: float | None = None, masks: np.ndarray | None = None,
                    recall: float | None = None) -> GateResult:
    """Judge ``fake`` (N, P, P) uint8 against the class's ``real`` patches (or a defect GAN's
    crops against the real defect crops, with the generated ``masks``)."""
    if len(fake) == 0:
        return GateResult(False, ["no synthetic patches"])
    f = fake.reshape(len(fake), -1).astype(np.float32)
    r = real.reshape(len(real), -1).astype(np.float32) if len(real) else f
    flat = float((f.std(axis=1) < settings.min_std).mean())
    blank = float((((f <= 0) | (f >= 255)).mean(axis=1) > settings.max_saturated).mean())
    within_real = float(r.std(axis=1).mean()) or 1.0
    diversity = float(f.std(axis=0).mean()) / within_real
    reasons = []
    if flat > settings.max_bad_share:
        reasons.append(f"{flat:.0%} of the patches are flat (std < {settings.min_std:g} grey levels)")
    if blank > settings.max_bad_share:
        reasons.append(f"{blank:.0%} of the patches are blank (over {settings.max_saturated:.0%} of pixels at 0/255)")
    if diversity < settings.min_diversity:
        reasons.append(f"the patches barely differ from each other (diversity {diversity:.2f} "
                       f"< {settings.min_diversity:g}): mode collapse")
    maskless = None
    if masks is not None:
        coverage = (masks.reshape(len(masks), -1) > 127).mean(axis=1)
        low, high = settings.mask_range
        maskless = float(((coverage < low) | (coverage > high)).mean())
        if maskless > settings.max_bad_share:
            reasons.append(f"{maskless:.0%} of the generated defects have a mask under {low:.1%} or over "
                           f"{high:.0%} of their crop: no defect drawn")
    if recall is not None and settings.min_recall is not None and recall < settings.min_recall:
        reasons.append(f"the samples cover few of the real ones (recall {recall:.2f} < {settings.min_recall:.2f} "
                       "in the extractor's features): mode collapse")
    content_passed = not reasons
    if fid is not None and settings.fid_ceiling is not None and not fid <= settings.fid_ceiling:
        reasons.append(f"FID {fid:.2f} above the ceiling {settings.fid_ceiling:g}")
    return GateResult(not reasons, reasons, flat, blank, diversity, fid, content_passed, maskless, recall)
