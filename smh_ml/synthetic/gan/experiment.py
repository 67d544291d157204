"""One GAN for one defect class: train (resumable) and score it, then synthesise patches.

Layout under ``gan_dir``: ``<label>.checkpoint.pt`` (kept while training, for resumes);
``<label>/`` written atomically when training ends: ``generator.pt`` (state dict),
``config.json``, ``history.json``, ``scores.json``, ``samples.png`` (real next to
generated), ``curves.png`` (losses and FID over training); and ``<label>/synthetic/``
(PNGs + index), replaced atomically on its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from smh_ml.config.schema import AugmentConfig, GanConfig, Profile
from smh_ml.data.augment import augment_to_count
from smh_ml.evaluation.plots import gan_curves_png, real_vs_generated_png
from smh_ml.io import atomic_dir
from smh_ml.synthetic.fid import extractor_id, gan_scores
from smh_ml.synthetic.gan.networks import build_gan
from smh_ml.synthetic.gan.training import generate, train_gan
from smh_ml.synthetic.gate import GateSettings, check_synthetic
from smh_ml.synthetic.pgan import write_synthetic

log = logging.getLogger(__name__)


def train_class_gan(real: np.ndarray, label: str, kind: str, gan_dir: Path | str, profile: Profile,
                    extractors: dict[str, nn.Module] | None = None) -> dict:
    """Train the ``kind`` GAN ("sdg" or "dcgan") on ``label``'s real TRAIN patches and score it.

    The first extractor also scores the FID checkpoints over training; the saved generator is
    the sampled one (the EMA when the profile has one) at its best checkpoint."""
    cfg, aug = profile.gan, profile.augment
    if len(real) == 0:
        raise ValueError(f"class {label!r} has no usable training patches for its GAN")
    gan_dir = Path(gan_dir)
    start = time.perf_counter()
    extra, _ = augment_to_count(real, cfg.augment_to, aug.brightness, aug.contrast, cfg.seed)
    data = np.concatenate([real, extra])
    named = list((extractors or {}).items())
    score = (lambda fake: gan_scores(real, fake, named[0][1], named[0][0], kid_subsets=20)) if named else None
    state = train_gan(data, kind, cfg, checkpoint=gan_dir / f"{label}.checkpoint.pt", desc=f"{kind} {label}",
                      score=score, score_id=extractor_id(*named[0]) if named else "")
    train_seconds = time.perf_counter() - start
    fake = generate(state.sampler(), cfg.fid_samples, cfg.latent, seed=cfg.seed + 1)
    scores = [gan_scores(real, fake, extractor, name) for name, extractor in named]
    result = {"label": label, "gan": kind, "real_patches": int(len(real)), "training_patches": int(len(data)),
              "steps": state.step, "best_step": state.best["step"] if state.best else state.step,
              "stopped": state.stopped or "budget", "ema": cfg.ema > 0, "diffaugment": list(cfg.diffaugment),
              "train_seconds": train_seconds, "scores": scores, **references(real, named, cfg, aug),
              "history": state.history}
    with atomic_dir(gan_dir / label) as tmp:
        torch.save({k: v.cpu() for k, v in state.sampler().state_dict().items()}, tmp / "generator.pt")
        config = {"kind": kind, "patch": int(real.shape[-1]), **dataclasses.asdict(cfg)}
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "history.json").write_text(json.dumps(state.history, indent=1) + "\n")
        (tmp / "scores.json").write_text(json.dumps(
            {k: v for k, v in result.items() if k != "history"}, indent=1) + "\n")
        real_vs_generated_png(real, fake, tmp / "samples.png", f"{kind}-{label}: real (top) vs generated")
        gan_curves_png(state.history, tmp / "curves.png", f"{kind}-{label}")
    return result


def references(real: np.ndarray, extractors: list[tuple[str, nn.Module]], cfg: GanConfig,
               aug: AugmentConfig) -> dict:
    """The two yardsticks of a GAN's FID/KID, per extractor: ``real_vs_real`` (two halves of
    the class's real patches: the floor) and ``augmented_vs_real`` (traditionally augmented
    copies of the real patches against the real ones: what P-TA adds)."""
    if len(real) < 4:
        return {"real_vs_real": [], "augmented_vs_real": []}
    halves = np.random.default_rng(cfg.seed).permutation(len(real))
    first, second = real[np.sort(halves[: len(real) // 2])], real[np.sort(halves[len(real) // 2:])]
    copies, _ = augment_to_count(real, len(real) + cfg.fid_samples, aug.brightness, aug.contrast, cfg.seed + 3)
    return {"real_vs_real": [gan_scores(first, second, e, name) for name, e in extractors],
            "augmented_vs_real": [gan_scores(real, copies, e, name) for name, e in extractors]}


def load_generator(folder: Path | str) -> tuple[nn.Module, dict]:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    generator, _ = build_gan(config["kind"], config["patch"], config["latent"], config["width"],
                             config.get("upsample", "transposed"))
    generator.load_state_dict(torch.load(folder / "generator.pt", map_location="cpu", weights_only=True))
    return generator.eval(), config


def relative_fid_ceiling(cfg: GanConfig, scores: dict) -> float | None:
    """``gate_fid_factor`` x the lower yardstick of the first extractor: real vs real (the
    floor) or traditionally augmented vs real (the top-up a refused class gets instead).

    Real vs real alone let a DCGAN through on magnetic tile's blowhole: its patches showed
    the tiles but no blowhole, at FID 1,418 under 4 x the floor of 401. Traditional copies
    scored 173 there. A synthetic set must come within the factor of the copies it replaces.
    """
    yardsticks = [scores[key][0]["fid"] for key in ("real_vs_real", "augmented_vs_real") if scores.get(key)]
    return cfg.gate_fid_factor * min(yardsticks) if yardsticks else None


def gate_settings(cfg: GanConfig, scores: dict) -> GateSettings:
    """The gate of ``cfg`` with its FID ceiling: the absolute one and the relative one
    (:func:`relative_fid_ceiling`), whichever is lower."""
    ceilings = [c for c in [cfg.fid_ceiling, relative_fid_ceiling(cfg, scores)] if c is not None]
    return GateSettings(fid_ceiling=min(ceilings) if ceilings else None)


def synthesize_class(label: str, gan_dir: Path | str, real: np.ndarray, cfg: GanConfig,
                     into: str = "synthetic") -> dict:
    """Write ``pgan_target - len(real)`` synthetic patches of ``label`` (never fewer than 0)
    into ``<label>/<into>``, when they pass the quality gate; a refused class gets none (training
    tops it up by traditional augmentation) and ``gate.json`` there says why. With ``cfg.gate``
    off they are written whatever the gate says (``gate.json`` still records its verdict)."""
    folder = Path(gan_dir) / label
    generator, config = load_generator(folder)
    count = max(0, cfg.pgan_target - len(real))
    scores = json.loads((folder / "scores.json").read_text()) if (folder / "scores.json").is_file() else {}
    probe = generate(generator, max(count, 64), config["latent"], seed=cfg.seed + 2)
    fid = scores["scores"][0]["fid"] if scores.get("scores") else None
    gate = check_synthetic(probe, real, gate_settings(cfg, scores), fid)
    refused = cfg.gate and not gate.passed
    arrays = probe[:count] if count and not refused else np.zeros((0, config["patch"], config["patch"]), np.uint8)
    with atomic_dir(folder / into) as tmp:
        write_synthetic(tmp, label, arrays, config["kind"])
        (tmp / "gate.json").write_text(json.dumps(gate.to_dict() | {"enforced": cfg.gate, "refused": refused,
                                                                   "wanted": count, "written": len(arrays)},
                                                  indent=1) + "\n")
    if refused:
        log.warning("%s: synthetic patches refused by the quality gate (%s); topped up by traditional "
                    "augmentation instead", label, "; ".join(gate.reasons))
    return {"synthetic": int(len(arrays)), "gate": gate.to_dict(), "refused": refused}


def run_class_gan(real: np.ndarray, label: str, kind: str, gan_dir: Path | str, profile: Profile,
                  extractors: dict[str, nn.Module] | None = None) -> dict:
    """Train, score and synthesise for one class (the CLI's path; the pipeline splits it)."""
    result = train_class_gan(real, label, kind, gan_dir, profile, extractors)
    result |= synthesize_class(label, gan_dir, real, profile.gan)
    return result
