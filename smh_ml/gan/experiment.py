"""One GAN for one defect class: train (resumable), score (FID/KID), synthesise.

Layout under ``gan_dir``: ``<label>.checkpoint.pt`` (kept while training, for resumes) and
``<label>/`` written atomically at the end: ``generator.pt`` (state dict), ``history.json``,
``scores.json``, ``samples.png`` (real next to generated) and ``synthetic/`` (PNGs + index).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from smh_ml.augment import augment_to_count
from smh_ml.fid import gan_scores
from smh_ml.gan.training import generate, train_gan
from smh_ml.io import atomic_dir
from smh_ml.plots import real_vs_generated_png
from smh_ml.profiles import Profile
from smh_ml.synthetic import write_synthetic


def run_class_gan(real: np.ndarray, label: str, kind: str, gan_dir: Path | str, profile: Profile,
                  extractors: dict[str, nn.Module] | None = None) -> dict:
    """Train the ``kind`` GAN ("sdg" or "dcgan") on ``label``'s real TRAIN patches."""
    cfg, aug = profile.gan, profile.augment
    if len(real) == 0:
        raise ValueError(f"class {label!r} has no usable training patches for its GAN")
    gan_dir = Path(gan_dir)
    start = time.perf_counter()
    extra, _ = augment_to_count(real, cfg.augment_to, aug.brightness, aug.contrast, cfg.seed)
    data = np.concatenate([real, extra])
    state = train_gan(data, kind, cfg, checkpoint=gan_dir / f"{label}.checkpoint.pt",
                      desc=f"{kind} {label}")
    train_seconds = time.perf_counter() - start
    fake = generate(state.generator, cfg.fid_samples, cfg.latent, seed=cfg.seed + 1)
    scores = [gan_scores(real, fake, extractor, name) for name, extractor in (extractors or {}).items()]
    n_synthetic = max(0, cfg.pgan_target - len(real))
    synthetic = generate(state.generator, n_synthetic, cfg.latent, seed=cfg.seed + 2)
    name = f"{kind}-{label}"
    result = {"label": label, "gan": kind, "real_patches": int(len(real)),
              "training_patches": int(len(data)), "epochs": state.epoch,
              "train_seconds": train_seconds, "scores": scores, "synthetic": n_synthetic,
              "history": state.history}
    with atomic_dir(gan_dir / label) as tmp:
        torch.save({k: v.cpu() for k, v in state.generator.state_dict().items()}, tmp / "generator.pt")
        (tmp / "history.json").write_text(json.dumps(state.history, indent=1) + "\n")
        (tmp / "scores.json").write_text(json.dumps(
            {k: v for k, v in result.items() if k != "history"}, indent=1) + "\n")
        real_vs_generated_png(real, fake, tmp / "samples.png", f"{name}: real (top) vs generated")
        write_synthetic(tmp / "synthetic", label, synthetic, kind)
    return result
