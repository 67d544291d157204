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
    """Classifier training. The defaults are the paper's (V-D: Adam 1e-4, constant rate,
    cross-entropy, L2 0.01 on conv weights, batch 128, whole epochs); the CPU profiles switch on
    the converging recipe: a budget of optimiser steps, AdamW with warm-up and one-cycle decay,
    label smoothing, class-balanced sampling, on-the-fly augmentation, and the best checkpoint
    on a validation split of the training captures."""

    arch: str = "inception_cnn"
    candidates: tuple[str, ...] = ()
    """Architectures the pipeline trains and tests on the same captures; the best becomes
    champion. Empty: just ``arch``."""
    epochs: int = 50
    """Used only when ``steps`` is 0: ``epochs`` passes over the training set."""
    steps: int = 0
    """Optimiser steps (the training budget); 0 = derive from ``epochs``."""
    batch_size: int = 128
    lr: float = 1e-4
    """Adam's rate, or the peak of the one-cycle schedule."""
    optimizer: str = "adam"
    """adam (the paper) or adamw."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay."""
    schedule: str = "constant"
    """constant (the paper) or onecycle (linear warm-up over ``warmup``, cosine decay)."""
    warmup: float = 0.1
    """Share of the steps spent warming up (onecycle)."""
    label_smoothing: float = 0.0
    l2: float = 0.01
    """Keras-style L2: ``l2 * sum(w**2)`` over conv weights, added to the batch loss."""
    balance: float = 0.0
    """Class-balanced sampling: a patch of a class with n patches is drawn with weight
    n ** -balance, so 0 = the natural mix (shuffled passes), 1 = every class equally often,
    0.5 = square-root sampling (rare defects seen often, clean patches still the majority)."""
    online_augment: bool = False
    """Flips, brightness/contrast and a shift, drawn per sample in every step; the fixed
    augmented copies of P-TA are then left out of training."""
    brightness: float = 0.2
    contrast: float = 0.2
    shift: float = 0.0625
    """Largest shift of on-the-fly augmentation, as a fraction of the patch side."""
    val_fraction: float = 0.0
    """Share of the TRAINING captures (per class, whole captures) held out to select the best
    checkpoint and to calibrate the decision threshold; 0 = last checkpoint, no threshold."""
    eval_every: int = 0
    """Steps between validation passes (0: once at the end)."""
    precision: str = "auto"
    """auto (bf16 autocast where the CPU has native bf16), bf16 or fp32."""
    pretrained: bool = True
    """ImageNet weights for architectures that ship them (efficientnet_lite0)."""
    flip_average: bool = False
    """Test-time flips inside the model (smh_ml.models.FlipAverage): validation, test and the
    exported ONNX graph average the logits of the input and its three flips (4x inference)."""
    target_false_alarm: float = 0.01
    """Decision threshold: the lowest whose false-alarm rate on the validation captures' clean
    images is at most this."""
    cv_folds: int = 10
    train_set: str = "pta"
    """Which training set the classifier learns from: pta (or pgan once GANs exist)."""
    recalibrate_bn: bool = False
    """Recompute BatchNorm running statistics over training inputs (no augmentation) before
    every validation pass and after training. On short CPU schedules they lag the weights: a
    MobileNetV2 fold model answered one class for every patch in eval mode (12.5%) and 76.4%
    after recalibration (docs/RESULTS.md)."""
    seed: int = 0
    budget_minutes: float = 0.0
    """Wall minutes for every candidate's training together, CV folds included: a short
    measured warm-up of each candidate turns it into optimiser steps (smh_ml.budget), never
    more than ``steps`` (or the architecture's budget). 0 = ``steps`` as given."""

    arch_budgets: tuple[tuple[str, int, int], ...] = ()
    """(architecture, steps, eval_every) for architectures that need another budget than
    ``steps``: a network learnt from scratch needs far more steps than a pretrained one."""

    def architectures(self) -> list[str]:
        """The candidates the pipeline trains: ``candidates``, or just ``arch``."""
        return list(self.candidates) or [self.arch]

    def for_arch(self, arch: str) -> TrainConfig:
        """This config for ``arch``, with its own budget from ``arch_budgets`` if it has one."""
        budget = next((b for b in self.arch_budgets if b[0] == arch), None)
        if budget is None:
            return dataclasses.replace(self, arch=arch)
        return dataclasses.replace(self, arch=arch, steps=int(budget[1]), eval_every=int(budget[2]))


GAN_UPSAMPLING = ("transposed", "resize")
"""SDG-GAN's ways of doubling a feature map (:mod:`smh_ml.gan.networks`)."""


@dataclass(frozen=True)
class GanConfig:
    """One GAN per defect class (paper IV-C): WGAN-GP, lambda 10, n_critic 3, Adam 2e-4."""

    latent: int = 256
    width: float = 1.0
    """Channel multiplier; 1.0 is exactly Tables 2-3."""
    upsample: str = "transposed"
    """SDG-GAN's up stages: ``transposed`` (Table 2's stride-2 transposed convs) or ``resize``
    (nearest-neighbour doubling, then a conv of the same kernel: no checkerboard grid)."""
    epochs: int = 150
    """Used only when ``steps`` is 0: ``epochs`` passes over the training patches (the paper)."""
    steps: int = 0
    """Generator steps (the training budget); 0 = derive from ``epochs``."""
    batch_size: int = 64
    n_critic: int = 3
    gp_lambda: float = 10.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    critic_lr: float | None = None
    """The critic's rate when it differs from the generator's (a two time-scale update, TTUR);
    None = ``lr``, as in the paper."""
    augment_to: int = 10_000
    """Real patches of the class, traditionally augmented to this many, train the GAN."""
    pgan_target: int = 1000
    """P-GAN: each defect class is topped up with synthetic patches to this many."""
    diffaugment: tuple[str, ...] = ()
    """DiffAugment policy applied to every real and generated image the critic sees
    (``color``, ``translation``, ``cutout``); () = off, as in the paper."""
    ema: float = 0.0
    """Decay of the exponential moving average of the generator's weights, which is then the
    generator sampled; 0 = off (the paper samples the raw generator)."""
    eval_every: int = 0
    """Generator steps between FID/KID checkpoints over training (0 = none): the best
    checkpoint's weights are kept."""
    patience: int = 0
    """Stop after this many FID checkpoints in a row without a better FID (0 = never)."""
    checkpoint_every: int = 250
    """Generator steps between resumable checkpoints."""
    fid_samples: int = 500
    """Generated patches compared with the class's real patches for FID/KID."""
    domain_epochs: int = 20
    """Epochs of the domain feature extractor (a classifier on real patches) for FID/KID,
    used when ``domain_steps`` is 0."""
    domain_steps: int = 0
    """Optimiser steps of the domain feature extractor (0: ``domain_epochs`` passes). Sized in
    steps because a few epochs of a small P-TA are few steps: bench's 4 epochs on magnetic tile
    were about 140 steps, after which the extractor classified 39% of its own training patches."""
    gate: bool = True
    """Synthetic patches enter training only through the quality gate (smh_ml.synthetic_gate)."""
    gate_fid_factor: float = 4.0
    """Gate: FID to the class's real patches at most this multiple of the lower of the
    real-vs-real FID (two halves of the real patches) and the augmented-vs-real FID
    (traditional copies, what a refused class gets), same extractor, when one scored the GAN."""
    fid_ceiling: float | None = None
    """Gate: an absolute FID ceiling as well (None: only the relative one)."""
    trial: bool = True
    """A class refused by the FID ceiling alone (its patches passed the content checks) goes on
    trial: the classifier is trained with and without its synthetic patches, and they enter
    P-GAN when validation captures say they help (smh_ml.synthetic_trial)."""
    trial_min_gain: int = 2
    """Trial: validation captures the classifier must decide right in addition, with the
    synthetic patches, for them to enter (2: more than one capture's luck)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.upsample not in GAN_UPSAMPLING:
            known = " or ".join(repr(u) for u in GAN_UPSAMPLING)
            raise ValueError(f"gan.upsample must be {known}, got {self.upsample!r}")


@dataclass(frozen=True)
class DeployConfig:
    """The model on the line: int8 is used only within ``int8_tolerance`` of fp32's accuracy."""

    int8_tolerance: float = 0.005
    """Largest held-out accuracy drop (fraction, 0.005 = half a point) int8 may cost."""
    calibration_patches: int = 512
    """Real training patches, stratified by class, that calibrate int8 activation ranges."""
    per_channel: bool = False
    """Per-tensor weight scales by default: on an AVX2 CPU (no VNNI) per-channel int8 agreed
    with fp32 on 97% of patches against 98% per-tensor and lost 4 points of image accuracy on
    magnetic tile where per-tensor lost none. EfficientNet-Lite0 loses far more in either form,
    with VNNI too, and its int8 model is refused (docs/DEPLOY.md)."""
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
    settings: tuple[str, ...] = ()
    """The ``section.key=value`` overrides applied to the named profile (:func:`apply_settings`),
    kept so a profile resolved later from the data (``auto``) gets them on top."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"patching": PatchingConfig, "split": SplitConfig, "augment": AugmentConfig,
                             "validation": ValidationConfig, "simulate": SimulateConfig, "train": TrainConfig,
                             "gan": GanConfig, "deploy": DeployConfig}


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples the frozen configs hold (nested ones included)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """A :class:`Profile` from :meth:`Profile.to_dict` output (as read back from JSON).
    Keys a section does not know are refused with their names."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            cls = SECTIONS[key]
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"profile section {key!r} has unknown keys {sorted(unknown)}")
            kwargs[key] = cls(**{k: _tuples(v) for k, v in value.items()})
        elif key in {f.name for f in dataclasses.fields(Profile)}:
            kwargs[key] = _tuples(value)
        else:
            raise ValueError(f"profile record has an unknown key {key!r}")
    return Profile(**kwargs)


# The converging CPU recipe (docs/MODELS.md): AdamW + one-cycle, label smoothing, square-root
# class-balanced batches, on-the-fly augmentation, BatchNorm statistics recomputed before each
# validation pass, best checkpoint on 15% of the training captures. The paper's constant
# Adam 1e-4 with L2 0.01 for a few CPU epochs never left the majority class (docs/RESULTS.md).
CPU_RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "weight_decay": 0.05, "schedule": "onecycle", "warmup": 0.1, "lr": 1e-3,
    "label_smoothing": 0.1, "l2": 0.0, "balance": 0.5, "online_augment": True, "val_fraction": 0.15,
    "recalibrate_bn": True, "batch_size": 64,
}

# GANs that learn on a CPU (docs/GAN.md): a budget of generator steps, two time-scale rates (the
# critic's 4x the generator's; with equal rates the small critic fell behind and the Wasserstein
# estimate turned negative), DiffAugment on everything the critic sees, an EMA of the generator
# for sampling, and FID checkpoints that keep the best weights and stop on a plateau. The domain
# extractor scoring them gets the bench classifier's 600 steps (about a minute at 64 px). 1,800
# steps of 32 at 64 px take about 9-10 minutes per class on 2 cores (0.30 s a step, plus the
# checkpoints). FID over training is noisy (blowhole: 2,803 / 2,478 / 2,076 / 2,410 / 1,804 every
# 500 steps), so a plateau needs three worse checkpoints in a row: with two, the first run
# stopped at step 900 with its best at step 300.
# upsample="resize" since session 8: on magnetic tile's blowhole at 1,800 steps the transposed convs
# drew a periodic grid and reached domain FID 96.4; resize-convs drew none and reached 10.3 (docs/GAN.md).
# A resize-conv step cost 0.42 s (transposed: 0.35 s): 11-11.5 min a class with scoring in session 8's
# magnetic-tile reproduce, over the 10 minutes. Channels-last networks (session 9) brought a
# step to 0.26-0.29 s: blowhole's 1,800 steps took 502 s with its FID checkpoints (was 707 s), and a
# simulated class 8-8.3 min from start to gate verdict.
CPU_GAN = GanConfig(width=0.25, upsample="resize", steps=1800, batch_size=32, lr=1e-4, critic_lr=4e-4,
                    diffaugment=("translation", "cutout"), ema=0.99, eval_every=300, patience=3,
                    augment_to=1000, pgan_target=300, checkpoint_every=100, fid_samples=300, domain_steps=600)

_DEMO = Profile(
    name="demo",
    description="CPU demo: the paper's 609 simulated captures, 64 patches of 64 px per "
                "capture (a 1024 x 256 image), the paper's Inception-CNN and baseline CNN, 600 steps "
                "of 64, 2-fold CV, small GANs.",
    # 64 tiles of 64 px with 1,200 clean patches and 150 per defect class, the bench data settings:
    # the Inception-CNN reached 97.54% held-out in 600 steps (61 s of training a fit) where 16
    # patches of 128 px gave EfficientNet-Lite0 95.08% and a 38-minute graph. Kept clean patches (no
    # cap): 82.79% (defects were a fifth of the draws). EfficientNet-Lite0 at 64 px: 66.39% in
    # 5 min 19 s, so the second candidate is the paper's baseline CNN; EfficientNet-Lite0 stays a
    # candidate in `whole` (docs/RESULTS.md).
    patching=PatchingConfig(patch=64, tiles=64),
    augment=AugmentConfig(ota_size=(128, 64), ota_target=120, pta_target=150, max_clean_patches=1200),
    # the paper's count (479 + 130): 120 captures left 14 validation captures to pick a
    # checkpoint and a threshold with, and 24 test captures (one miss = 4 points)
    simulate=SimulateConfig(count=609),
    # bench's recipe, checkpoints every 200 steps included: every 100, the noisy mid-schedule
    # step 300 won on the 73 validation captures (72 right, as at step 500) and scored 91.80%
    # held-out, against 97.54% for step 600 (docs/RESULTS.md)
    train=TrainConfig(arch="inception_cnn", candidates=("inception_cnn", "baseline_cnn"),
                      steps=600, eval_every=200, cv_folds=2, **CPU_RECIPE),
    # 60 generator steps at 64 px (width 0.125) took 16-18 s a class in make demo, far too few to
    # learn; the synthetic gate then tops the classes up by traditional augmentation. GANs
    # that learn: the bench profile. The domain extractor: 300 steps (bench: 600).
    gan=dataclasses.replace(CPU_GAN, width=0.125, steps=60, eval_every=30, patience=0, checkpoint_every=30,
                            domain_steps=300),
)

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        description="The paper's sizes: 16 patches of 256 px (2048x512 on SMH-like 4:1 "
                    "captures, by Eq. 5-7). For a GPU.",
        patching=PatchingConfig(patch=256, tiles=16),
    ),
    "demo": _DEMO,
    "whole": Profile(
        name="whole",
        description="CPU, whole captures at 256 px (one tile): for near-square captures whose defects are "
                    "large next to the capture, like magnetic tile. EfficientNet-Lite0 from ImageNet and "
                    "the Inception-CNN from scratch, 300 steps of 32 (the Inception-CNN 1,500), 2-fold CV, "
                    "test-time flips, threshold for 2% false alarms.",
        patching=PatchingConfig(patch=256, tiles=1),
        augment=AugmentConfig(ota_target=120, pta_target=120, max_clean_patches=None),
        train=TrainConfig(arch="efficientnet_lite0", candidates=("efficientnet_lite0", "inception_cnn"),
                          steps=300, eval_every=50, cv_folds=2, arch_budgets=(("inception_cnn", 1500, 250),),
                          **(CPU_RECIPE | {"batch_size": 32, "flip_average": True, "target_false_alarm": 0.02})),
        # whole captures of 256 px: a GAN that learns them does not fit a CPU budget
        gan=dataclasses.replace(CPU_GAN, width=0.125, steps=100, eval_every=50, patience=0, checkpoint_every=25,
                                domain_epochs=4, domain_steps=0),
    ),
    "bench": Profile(
        name="bench",
        description="The paper's experiments on 2 CPU cores in about two hours (smh-ml reproduce): "
                    "64-px patches, 2-fold CV (paper 10), 600 steps, 1200 clean patches "
                    "(paper 2560), GANs of 1,800 generator steps with the CPU GAN recipe.",
        patching=PatchingConfig(patch=64, tiles=16),
        # Clean patches are ~2/3 of the paper's P-TA (2560 of 3810). At 400 (a sixth of P-GAN)
        # the classifiers called most clean patches defective, and Algorithm 1 (any defect patch
        # flags the image) then flagged every clean capture: 7.8% held-out accuracy
        # (docs/RESULTS.md). O-TA images are 2 patches in area and 2:1, as the paper's 512x256 are.
        augment=AugmentConfig(ota_size=(128, 64), ota_target=120, pta_target=150, max_clean_patches=1200),
        train=TrainConfig(steps=600, eval_every=200, cv_folds=2, **CPU_RECIPE),
        gan=CPU_GAN,
    ),
    # The default: a placeholder until the capture set is measured (smh_ml.recipe), then the
    # `whole` or `demo` preset with the derived tile count, candidates and a 25-minute budget.
    # Its own sections are demo's, for what runs before patching (validation, simulate).
    # Colour captures are read as grey (as predict reads them) instead of refused: a user's own
    # camera may store colour, and no flag should be needed to train on it.
    "auto": dataclasses.replace(
        _DEMO, name="auto",
        description="The default: the recipe from the data. Measures the capture set (sizes, background, "
                    "defect extents from masks or boxes, clean captures, class counts) and derives whole "
                    "captures or tiles, the candidates and their steps from a budget in minutes.",
        validation=ValidationConfig(convert_color=True)),
    "ci": Profile(
        name="ci",
        description="Tiny CPU profile for the tests: patches of 32 px, tiny simulated captures.",
        patching=PatchingConfig(patch=32, tiles=16),
        augment=AugmentConfig(ota_size=(128, 64), ota_target=24, pta_target=40,
                              max_clean_patches=200),
        validation=ValidationConfig(height_range=(16, 8192), width_range=(16, 8192)),
        simulate=SimulateConfig(count=40, scale=0.125),
        train=TrainConfig(steps=40, eval_every=20, cv_folds=2, candidates=("inception_cnn", "baseline_cnn"),
                          **(CPU_RECIPE | {"batch_size": 32, "val_fraction": 0.25})),
        gan=GanConfig(latent=32, width=0.125, steps=4, batch_size=16, augment_to=64, lr=1e-4, critic_lr=4e-4,
                      diffaugment=("translation", "cutout"), ema=0.9, eval_every=2, patience=2,
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
    varied = dataclasses.replace(with_overrides(profile, overrides),
                                 settings=(*profile.settings, *(item.strip() for item in settings)))
    suffix = "+".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in overrides.items())
    return dataclasses.replace(varied, name=f"{profile.name}+{suffix}",
                               description=f"{profile.description} Overridden: {suffix.replace('+', ', ')}.")
