"""Named configuration profiles.

Every size in the project comes from a profile, so the ``paper`` profile reproduces the
paper's numbers exactly and the small CPU profiles (``demo``, ``ci``) run the same code
with smaller numbers. Profiles are frozen dataclasses; derive variants with
:func:`with_overrides` instead of editing them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PatchingConfig:
    """Stage 2 of the paper: crop, resize, cut into tiles, label tiles from masks."""

    patch: int = 256
    """Side of a square patch in pixels."""
    tiles: int = 16
    """Target number of patches per capture; rows x cols is derived from the set's aspect."""
    image_size: tuple[int, int] | None = None
    """Fixed resize (H, W). None derives it from the capture set with Eq. 5-7."""
    background_level: int = 16
    """Grey level (0-255) below which a pixel counts as background for cropping. Line-scan
    backgrounds sit under ~15; dark product areas (magnetic tile goes down to ~20) must stay."""
    label_min_fraction: float = 0.002
    """A patch takes its capture's defect class when defect pixels cover this share of it..."""
    label_min_share: float = 0.25
    """...or when it holds this share of all of its capture's defect pixels."""


@dataclass(frozen=True)
class SplitConfig:
    test_fraction: float = 0.2
    """Share of ORIGINAL captures per class held out for the image-level test."""
    seed: int = 0


@dataclass(frozen=True)
class AugmentConfig:
    """Traditional augmentation (flips, brightness, contrast; no rotation or crop)."""

    brightness: float = 0.2
    contrast: float = 0.2
    ota_size: tuple[int, int] = (512, 256)
    """Size (H, W) of whole images in the O-TA set (the paper trained at 512x256)."""
    ota_target: int = 430
    """O-TA: whole images per class after augmentation (paper: 417-440)."""
    pta_target: int = 250
    """P-TA: patches per defect class after augmentation (paper: 250)."""
    max_clean_patches: int | None = 2560
    """Clean patches kept in patch training sets (paper: 2560); None keeps all."""
    seed: int = 0


@dataclass(frozen=True)
class ValidationConfig:
    height_range: tuple[int, int] = (64, 8192)
    width_range: tuple[int, int] = (64, 8192)
    convert_color: bool = False
    """Accept RGB/16-bit captures by converting them to 8-bit grey (reported as such)."""


@dataclass(frozen=True)
class SimulateConfig:
    count: int = 609
    """Captures to simulate (paper's originals: 479 train + 130 test)."""
    scale: float = 1.0
    """Linear scale of the simulated geometry; 1.0 = 3584 px high."""
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Classifier training (paper V-D): Adam 1e-4, cross-entropy, L2 0.01 on conv weights."""

    arch: str = "inception_cnn"
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-4
    l2: float = 0.01
    """Keras-style L2: ``l2 * sum(w**2)`` over conv weights, added to the batch loss."""
    cv_folds: int = 10
    train_set: str = "pta"
    """Which training set the classifier learns from: pta (or pgan once GANs exist)."""
    recalibrate_bn: bool = False
    """After training, recompute BatchNorm running statistics over the training set. On short
    CPU schedules they lag the weights: a MobileNetV2 fold model answered one class for every
    patch in eval mode (12.5%) and 76.4% after recalibration (docs/RESULTS.md). Off by
    default, so the figures already reported stay reproducible."""
    seed: int = 0


@dataclass(frozen=True)
class GanConfig:
    """One GAN per defect class (paper IV-C): WGAN-GP, lambda 10, n_critic 3, Adam 2e-4."""

    latent: int = 256
    width: float = 1.0
    """Channel multiplier; 1.0 is exactly Tables 2-3."""
    epochs: int = 150
    batch_size: int = 64
    n_critic: int = 3
    gp_lambda: float = 10.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    augment_to: int = 10_000
    """Real patches of the class, traditionally augmented to this many, train the GAN."""
    pgan_target: int = 1000
    """P-GAN: each defect class is topped up with synthetic patches to this many."""
    checkpoint_every: int = 10
    fid_samples: int = 500
    """Generated patches compared with the class's real patches for FID/KID."""
    domain_epochs: int = 20
    """Epochs of the domain feature extractor (a classifier on real patches) for FID/KID."""
    seed: int = 0


@dataclass(frozen=True)
class DeployConfig:
    """The model on the line: int8 is used only within ``int8_tolerance`` of fp32's accuracy."""

    int8_tolerance: float = 0.005
    """Largest held-out accuracy drop (fraction, 0.005 = half a point) int8 may cost."""
    calibration_patches: int = 512
    """Real training patches, stratified by class, that calibrate int8 activation ranges."""
    per_channel: bool = False
    """Per-tensor weight scales by default: on this AVX2 CPU (no VNNI) per-channel int8 agreed
    with fp32 on 97% of patches against 98% per-tensor and lost 4 points of image accuracy on
    magnetic tile where per-tensor lost none (docs/DEPLOY.md)."""
    threads: int | None = None
    """onnxruntime intra-op threads; None = every core."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    clean_class: str = "defect-free"
    patching: PatchingConfig = field(default_factory=PatchingConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        description="The paper's sizes: 16 patches of 256 px (2048x512 on SMH-like 4:1 "
                    "captures, by Eq. 5-7). For a GPU.",
        patching=PatchingConfig(patch=256, tiles=16),
    ),
    "demo": Profile(
        name="demo",
        description="CPU demo: patches of 64 px, 16 per capture, scaled-down augmentation targets.",
        patching=PatchingConfig(patch=64, tiles=16),
        augment=AugmentConfig(ota_target=120, pta_target=120, max_clean_patches=800),
        simulate=SimulateConfig(count=120),
        # lr/L2 for a short CPU schedule: at the paper's 1e-4 / 0.01 the L2 term dominated
        # the loss and training accuracy was still climbing after 8 epochs (docs/RESULTS.md).
        train=TrainConfig(epochs=8, cv_folds=3, lr=1e-3, l2=1e-4),
        gan=GanConfig(width=0.25, epochs=6, augment_to=1000, pgan_target=300,
                      checkpoint_every=2, fid_samples=300, domain_epochs=4),
    ),
    "bench": Profile(
        name="bench",
        description="The paper's experiments on 2 CPU cores in about two hours (smh-ml reproduce): "
                    "64-px patches, 2-fold CV (paper 10), 5 epochs (paper 50), 1200 clean patches "
                    "(paper 2560), GANs as demo.",
        patching=PatchingConfig(patch=64, tiles=16),
        # Clean patches are ~2/3 of the paper's P-TA (2560 of 3810). At 400 (a sixth of P-GAN)
        # the classifiers called most clean patches defective, and Algorithm 1 (any defect patch
        # flags the image) then flagged every clean capture: 7.8% held-out accuracy
        # (docs/RESULTS.md). O-TA images are 2 patches in area and 2:1, as the paper's 512x256 are.
        augment=AugmentConfig(ota_size=(128, 64), ota_target=120, pta_target=150, max_clean_patches=1200),
        train=TrainConfig(epochs=5, cv_folds=2, lr=1e-3, l2=1e-4),
        # the demo GAN settings exactly, so demo-profile GAN runs on the same patches are reused
        gan=GanConfig(width=0.25, epochs=6, augment_to=1000, pgan_target=300,
                      checkpoint_every=2, fid_samples=300, domain_epochs=4),
    ),
    "ci": Profile(
        name="ci",
        description="Tiny CPU profile for the tests: patches of 32 px, tiny simulated captures.",
        patching=PatchingConfig(patch=32, tiles=16),
        augment=AugmentConfig(ota_size=(128, 64), ota_target=24, pta_target=40,
                              max_clean_patches=200),
        validation=ValidationConfig(height_range=(16, 8192), width_range=(16, 8192)),
        simulate=SimulateConfig(count=40, scale=0.125),
        train=TrainConfig(epochs=2, cv_folds=2, batch_size=64, lr=1e-3, l2=1e-4),
        gan=GanConfig(latent=32, width=0.125, epochs=2, batch_size=16, augment_to=64,
                      pgan_target=60, checkpoint_every=1, fid_samples=32, domain_epochs=1),
    ),
}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name``; a clear error lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise KeyError(f"unknown profile {name!r}; known profiles: {known}") from None


def with_overrides(profile: Profile, overrides: dict[str, Any]) -> Profile:
    """Copy ``profile`` with dotted-key overrides, e.g. ``{"patching.patch": 32}``."""
    result = profile
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if not rest:
            result = dataclasses.replace(result, **{head: value})
            continue
        section = getattr(result, head)
        if not dataclasses.is_dataclass(section) or "." in rest:
            raise KeyError(f"cannot override {key!r} on profile {profile.name!r}")
        result = dataclasses.replace(result, **{head: dataclasses.replace(section, **{rest: value})})
    return result


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def apply_settings(profile: Profile, settings: Sequence[str]) -> Profile:
    """Apply ``section.key=value`` strings (values in JSON: ``128``, ``1e-3``, ``[128, 64]``,
    ``null``; anything else is a string) to ``profile``. The result's name and description
    record them (``bench+patching.patch=128``), so reports and MLflow runs show the variant."""
    if not settings:
        return profile
    overrides: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        key = key.strip()
        head, _, rest = key.partition(".")
        section = getattr(profile, head, None)
        if not sep or not rest or not dataclasses.is_dataclass(section) \
                or rest not in {f.name for f in dataclasses.fields(section)}:
            raise KeyError(f"bad setting {item!r}: expected section.key=value with a key of profile "
                           f"{profile.name!r}, e.g. patching.patch=128")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[key] = _coerce(getattr(section, rest), value)
    varied = with_overrides(profile, overrides)
    suffix = "+".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in overrides.items())
    return dataclasses.replace(varied, name=f"{profile.name}+{suffix}",
                               description=f"{profile.description} Overridden: {suffix.replace('+', ', ')}.")
