"""The named profiles: the paper's sizes and the CPU presets the recipe from the data
(``auto``, :mod:`smh_ml.data.recipe`) resolves to.

Every size in the project comes from a profile, so the ``paper`` profile reproduces the
paper's numbers exactly and the small CPU profiles (``demo``, ``ci``) run the same code
with smaller numbers. What each value was measured to give is in docs/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from smh_ml.config.schema import (
    AugmentConfig,
    GanConfig,
    PatchingConfig,
    Profile,
    SimulateConfig,
    TrainConfig,
    ValidationConfig,
)

# The converging CPU recipe (docs/MODELS.md): AdamW + one-cycle, label smoothing, square-root
# class-balanced batches, on-the-fly augmentation, BatchNorm statistics recomputed before each
# validation pass, best checkpoint on 15% of the training captures: the paper's constant
# Adam 1e-4 with L2 0.01 does not leave the majority class in a CPU's few epochs (docs/RESULTS.md).
CPU_RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "weight_decay": 0.05, "schedule": "onecycle", "warmup": 0.1, "lr": 1e-3,
    "label_smoothing": 0.1, "l2": 0.0, "balance": 0.5, "online_augment": True, "val_fraction": 0.15,
    "recalibrate_bn": True, "batch_size": 64,
}


# GANs that learn on a CPU (docs/GAN.md has the figures behind each value):
# - two time-scale rates, the critic's 4x the generator's: with equal rates the small critic
#   falls behind and the Wasserstein estimate turns negative;
# - DiffAugment on everything the critic sees and an EMA of the generator for sampling;
# - FID checkpoints keep the best weights; FID over training is noisy, so a plateau needs three
#   worse checkpoints in a row (two stop runs far before their best);
# - resize-convs: transposed convs draw a periodic grid on small defect patches;
# - 1,800 steps of 32 at 64 px keep a class within about 10 minutes on 2 cores with the
#   channels-last networks; the domain extractor gets the bench classifier's 600 steps.
CPU_GAN = GanConfig(width=0.25, upsample="resize", steps=1800, batch_size=32, lr=1e-4, critic_lr=4e-4,
                    diffaugment=("translation", "cutout"), ema=0.99, eval_every=300, patience=3,
                    augment_to=1000, pgan_target=300, checkpoint_every=100, fid_samples=300, domain_steps=600)

# Defect GANs (gan.source = "defects", docs/GAN.md): the CPU recipe above on crops centred on
# each defect with its mask, blended onto clean patches. A 32-px SDG-GAN step of 32 takes about
# 0.13 s on 2 cores, so 1,500 steps are about 3.5 minutes a class before FID checkpoints; after
# them magnetic tile's blowhole GAN drew dark blobs under blob masks (at 400 it drew grey).
# Without a diversity term these GANs drew one defect for every latent (the simulated set's
# imprinted and pits samples spread 4-9 grey levels across samples, the real crops 18-20); the
# mode-seeking term at 0.3 spreads them 13-29 and raised their recall of the real crops from
# 0.22 / 0.06 to 0.61 / 0.52 (weight 1.0 overshot: 36 on pits, precision 0.15; docs/GAN.md).
CPU_DEFECT_GAN = dataclasses.replace(CPU_GAN, source="defects", crop=32, steps=1500, mode_seeking=0.3)


_DEMO = Profile(
    name="demo",
    description="CPU demo: the paper's 609 simulated captures, 64 patches of 64 px per "
                "capture (a 1024 x 256 image), the paper's Inception-CNN and baseline CNN, 600 steps "
                "of 64, 2-fold CV, small GANs.",
    # 64 tiles of 64 px keep the simulated set's pits at 3 px for the Inception-CNN (the recipe's
    # rule), and a fit takes about a minute; the clean patches are capped at 1,200 so that the
    # defects are not a small share of the draws. EfficientNet-Lite0 does not learn 64-px tiles in
    # a CPU budget, so the second candidate is the paper's baseline CNN (docs/RESULTS.md).
    patching=PatchingConfig(patch=64, tiles=64),
    augment=AugmentConfig(ota_size=(128, 64), ota_target=120, pta_target=150, max_clean_patches=1200),
    # the paper's count (479 + 130): 120 captures left 14 validation captures to pick a
    # checkpoint and a threshold with, and 24 test captures (one miss = 4 points)
    simulate=SimulateConfig(count=609),
    # bench's recipe, checkpoints every 200 steps included: with a checkpoint every 100, a noisy
    # mid-schedule step can win on the few validation captures and ship worse (docs/RESULTS.md)
    train=TrainConfig(arch="inception_cnn", candidates=("inception_cnn", "baseline_cnn"),
                      steps=600, eval_every=200, cv_folds=2, **CPU_RECIPE),
    # defect GANs of 600 steps: the simulated pits and scratches are 16-px crops at this patch
    # scale, and a class stays within about 2 minutes on 2 cores
    gan=dataclasses.replace(CPU_DEFECT_GAN, steps=600, eval_every=200, patience=0, checkpoint_every=100,
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
                          steps=300, eval_every=50, cv_folds=2,
                          **(CPU_RECIPE | {"batch_size": 32, "flip_average": True, "target_false_alarm": 0.02})),
        # whole captures of 256 px: a GAN that learns them does not fit a CPU budget, one that learns
        # the defects in them does; classes whose defects fill the capture get no GAN
        gan=dataclasses.replace(CPU_DEFECT_GAN, domain_epochs=4, domain_steps=0),
    ),
    "bench": Profile(
        name="bench",
        description="The paper's experiments on 2 CPU cores in about two hours (smh-ml reproduce): "
                    "64-px patches, 2-fold CV (paper 10), 600 steps, 1200 clean patches "
                    "(paper 2560), GANs of 1,800 generator steps with the CPU GAN recipe.",
        patching=PatchingConfig(patch=64, tiles=16),
        # Clean patches are ~2/3 of the paper's P-TA (2560 of 3810): with far fewer, the classifiers
        # call clean patches defective and Algorithm 1 (any defect patch flags the image) flags
        # every clean capture (docs/RESULTS.md). O-TA images are 2 patches in area and 2:1, as the
        # paper's 512x256 are.
        augment=AugmentConfig(ota_size=(128, 64), ota_target=120, pta_target=150, max_clean_patches=1200),
        train=TrainConfig(steps=600, eval_every=200, cv_folds=2, **CPU_RECIPE),
        gan=CPU_GAN,
    ),
    # The default: a placeholder until the capture set is measured (smh_ml.data.recipe), then the
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
        gan=GanConfig(source="defects", crop=16, latent=32, width=0.125, steps=4, batch_size=16, augment_to=64,
                      lr=1e-4, critic_lr=4e-4,
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
