"""The configuration schema: a :class:`Profile` of frozen sections, one per stage.

Each stage's functions take the section they use. Profiles are frozen; derive variants with
:func:`smh_ml.config.overrides.with_overrides` instead of editing them. The named profiles
are in :mod:`smh_ml.config.presets`.
"""

from __future__ import annotations

import dataclasses
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
    measured warm-up of each candidate turns it into optimiser steps (smh_ml.training.budget), never
    more than ``steps`` (or the architecture's budget). 0 = ``steps`` as given."""

    scale_steps: bool = True
    """A candidate learnt from scratch beside one fine-tuned from ImageNet weights trains its
    card's ``steps_scale`` times ``steps`` (smh_ml.training.budget.candidate_config); False:
    every candidate trains ``steps``, as an explicit ``smh-ml train --steps`` asks."""

    def architectures(self) -> list[str]:
        """The candidates the pipeline trains: ``candidates``, or just ``arch``."""
        return list(self.candidates) or [self.arch]


GAN_UPSAMPLING = ("transposed", "resize")
"""SDG-GAN's ways of doubling a feature map (:mod:`smh_ml.synthetic.gan.networks`)."""
GAN_SOURCES = ("patches", "defects")
"""What a class's GAN learns (:attr:`GanConfig.source`)."""


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
    """Synthetic patches enter training only through the quality gate (smh_ml.synthetic.gate)."""
    gate_fid_factor: float = 4.0
    """Gate: FID to the class's real patches at most this multiple of the lower of the
    real-vs-real FID (two halves of the real patches) and the augmented-vs-real FID
    (traditional copies, what a refused class gets), same extractor, when one scored the GAN."""
    fid_ceiling: float | None = None
    """Gate: an absolute FID ceiling as well (None: only the relative one)."""
    gate_recall_factor: float = 0.5
    """Gate: the generated samples' recall of the real ones (improved precision and recall,
    Kynkäänniemi et al. 2019, in the first extractor's features) at least this share of the
    recall of one half of the real samples by the other. Collapsed defect GANs on the simulated
    set recalled 2-24% against 90-95% for the halves; traditionally augmented copies 94-96%.
    0 = not used."""
    mode_seeking: float = 0.0
    """SDG-GAN's generator loss adds this weight over the mode-seeking ratio (image distance over
    latent distance between two halves of a batch, Mao et al. 2019), so distinct latents must
    draw distinct defects; 0 = the paper's Eq. 8."""
    source: str = "patches"
    """What each class's GAN learns: ``patches`` (the class's whole training patches, the paper)
    or ``defects`` (crops centred on each defect of the class's TRAIN captures, with the
    defect's mask as a second channel; the generated defects are blended onto real clean TRAIN
    patches, :mod:`smh_ml.synthetic.defects`). In a whole patch a defect covers a small share (a
    magnetic-tile blowhole a median 0.15% of a capture), so a GAN on a CPU budget learns the
    background and never the defect."""
    crop: int = 32
    """``defects``: the largest GAN side (a power of two); a class's crops are resized to the
    power of two that holds them (16 at least, this at most) and back when placed."""
    crop_margin: float = 2.0
    """``defects``: a class's crop side is this multiple of its median defect extent at the patch
    scale the classifier sees (at least 8 px, at most the patch), so the crop holds the defect
    and some of the surface around it."""
    trial: bool = True
    """Every class whose synthetic patches passed the content checks (admitted by the gate, or
    refused by the FID ceiling alone) goes on trial: the classifier is trained with and without
    all of their patches, and they enter P-GAN when validation captures say they do not hurt
    (smh_ml.workflows.trial). Off: the patches the gate admitted, untried."""
    trial_min_gain: int = 2
    """Trial: validation captures the classifier must decide right in addition, with the
    synthetic patches, for patches the FID ceiling refused to enter; patches the gate admitted
    are refused when they cost this many (2: more than one capture's luck)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.upsample not in GAN_UPSAMPLING:
            known = " or ".join(repr(u) for u in GAN_UPSAMPLING)
            raise ValueError(f"gan.upsample must be {known}, got {self.upsample!r}")
        if self.source not in GAN_SOURCES:
            raise ValueError("gan.source must be " + " or ".join(map(repr, GAN_SOURCES)) + f", got {self.source!r}")
        if self.crop < 16 or (self.crop & (self.crop - 1)):
            raise ValueError(f"gan.crop must be a power of two >= 16, got {self.crop}")


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
    fp32_islands: bool = True
    """Keep the nodes after the convolutional trunk in float (smh_ml.export.quantization.
    fp32_islands): the head, and the feature distance behind the unknown verdict, whose squared
    Mahalanobis terms int8 would round coarsely."""
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


RETIRED_KEYS: dict[str, frozenset[str]] = {"train": frozenset({"arch_budgets"})}
"""Keys that records written before a setting left the schema may still hold, read back and
dropped (per-architecture step budgets are the architecture cards' ``steps_scale`` now)."""


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """A :class:`Profile` from :meth:`Profile.to_dict` output (as read back from JSON).
    Keys a section does not know are refused with their names."""
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            cls = SECTIONS[key]
            if key == "train" and value.get("arch_budgets") == []:  # cleared budgets: every candidate alike
                value = {**value, "scale_steps": False}
            value = {k: v for k, v in value.items() if k not in RETIRED_KEYS.get(key, ())}
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"profile section {key!r} has unknown keys {sorted(unknown)}")
            kwargs[key] = cls(**{k: _tuples(v) for k, v in value.items()})
        elif key in {f.name for f in dataclasses.fields(Profile)}:
            kwargs[key] = _tuples(value)
        else:
            raise ValueError(f"profile record has an unknown key {key!r}")
    return Profile(**kwargs)


