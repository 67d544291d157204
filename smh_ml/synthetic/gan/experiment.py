"""One GAN for one defect class: train (resumable) and score it, then synthesise patches.

Layout under ``gan_dir``: ``<label>.checkpoint.pt`` (kept while training, for resumes);
``<label>/`` written atomically when training ends: ``generator.pt`` (state dict),
``config.json``, ``history.json``, ``scores.json``, ``samples.png`` (real next to
generated), ``curves.png`` (losses and FID over training); and ``<label>/synthetic/``
(PNGs + index), replaced atomically on its own.

A defect GAN (``gan.source = "defects"``) learns the class's defect crops with their masks
(:mod:`smh_ml.synthetic.defects`); it is scored on the crops against the real crops, and its
synthetic patches are generated defects blended onto real clean patches
(:mod:`smh_ml.synthetic.blend`), with ``masks.npy`` and ``blended.png`` beside them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from smh_ml.config.schema import AugmentConfig, GanConfig, Profile
from smh_ml.data.augment import augment_to_count
from smh_ml.evaluation.plots import gan_curves_png, named_rows_png, real_vs_generated_png
from smh_ml.io import atomic_dir, save_npy
from smh_ml.synthetic.blend import composite, placed_windows
from smh_ml.synthetic.defects import GanData, augment_crops
from smh_ml.synthetic.fid import extractor_id, gan_scores
from smh_ml.synthetic.gan.networks import build_gan
from smh_ml.synthetic.gan.training import channels_of, generate, train_gan
from smh_ml.synthetic.gate import GateResult, GateSettings, check_synthetic
from smh_ml.synthetic.pgan import write_synthetic

log = logging.getLogger(__name__)


GENERIC_SIDE = 64
"""Side at which generic (ImageNet) features see a defect: blowing 32-px crops up to a 256-px
patch for EfficientNet-Lite0 cost about 50 s per FID checkpoint on 2 cores and adds no detail.
The domain extractor takes the patch side it was trained on."""


def scored_view(arrays: np.ndarray, data: GanData, extractor: str = "domain") -> np.ndarray:
    """What ``extractor`` sees of a GAN's output or training data: patches as they are; defect
    crops as they will be used, blended onto the class's host patches (the same surfaces and
    places for every set scored, :func:`smh_ml.synthetic.blend.placed_windows`) and cut back
    out, resized to the patch side (domain features) or to :data:`GENERIC_SIDE` (the others).
    The surface around a defect in its crop never reaches a classifier, so it is not judged."""
    if arrays.ndim == 3:
        return arrays
    patch = int(data.patches.shape[-1])
    side = patch if extractor == "domain" else min(patch, GENERIC_SIDE)
    windows = placed_windows(arrays, data.hosts, data.side, seed=0)
    return np.stack([cv2.resize(w, (side, side), interpolation=cv2.INTER_LINEAR) for w in windows]) \
        if len(windows) else np.zeros((0, side, side), np.uint8)


def _scores(real: np.ndarray, fake: np.ndarray, data: GanData, extractors: list[tuple[str, nn.Module]],
            **kwargs) -> list[dict]:
    return [gan_scores(scored_view(real, data, name), scored_view(fake, data, name), extractor, name, **kwargs)
            for name, extractor in extractors]


def _score_id(extractor: tuple[str, nn.Module], data: GanData) -> str:
    """What the FID checkpoints of a run are computed from: the extractor and, for a defect GAN,
    the host patches and crop side its defects are placed with (:func:`scored_view`)."""
    name = extractor_id(*extractor)
    if not data.defects:
        return name
    digest = hashlib.sha256(np.ascontiguousarray(data.hosts).tobytes())
    return f"{name}|placed:{data.side}:{digest.hexdigest()[:16]}"


def train_class_gan(data: GanData, label: str, kind: str, gan_dir: Path | str, profile: Profile,
                    extractors: dict[str, nn.Module] | None = None) -> dict:
    """Train the ``kind`` GAN ("sdg" or "dcgan") on ``label``'s TRAIN patches or defect crops
    (``data``, :func:`smh_ml.synthetic.defects.gan_data`) and score it.

    The first extractor also scores the FID checkpoints over training; the saved generator is
    the sampled one (the EMA when the profile has one) at its best checkpoint."""
    cfg, aug = profile.gan, profile.augment
    real = data.real
    if data.skip:
        return _skipped(data, label, kind, Path(gan_dir))
    if len(real) == 0:
        raise ValueError(f"class {label!r} has no usable training patches for its GAN")
    gan_dir = Path(gan_dir)
    start = time.perf_counter()
    if data.defects:
        training = augment_crops(real, cfg.augment_to, aug, cfg.seed)[0]
    else:
        extra, _ = augment_to_count(real, cfg.augment_to, aug.brightness, aug.contrast, cfg.seed)
        training = np.concatenate([real, extra])
    named = list((extractors or {}).items())
    score = (lambda fake: _scores(real, fake, data, named[:1], kid_subsets=20, manifold=False)[0]) if named else None
    state = train_gan(training, kind, cfg, checkpoint=gan_dir / f"{label}.checkpoint.pt", desc=f"{kind} {label}",
                      score=score, score_id=_score_id(named[0], data) if named else "")
    train_seconds = time.perf_counter() - start
    fake = generate(state.sampler(), cfg.fid_samples, cfg.latent, seed=cfg.seed + 1)
    scores = _scores(real, fake, data, named)
    result = {"label": label, "gan": kind, "source": "defects" if data.defects else "patches",
              "crop_side": data.side, "real_patches": int(len(data.patches)), "real_crops": int(len(real)) if
              data.defects else 0, "training_patches": int(len(training)),
              "steps": state.step, "best_step": state.best["step"] if state.best else state.step,
              "stopped": state.stopped or "budget", "ema": cfg.ema > 0, "diffaugment": list(cfg.diffaugment),
              "train_seconds": train_seconds, "scores": scores, **references(real, data, named, cfg, aug),
              "history": state.history}
    with atomic_dir(gan_dir / label) as tmp:
        torch.save({k: v.cpu() for k, v in state.sampler().state_dict().items()}, tmp / "generator.pt")
        config = {"kind": kind, "patch": int(real.shape[-1]), "channels": channels_of(real), **dataclasses.asdict(cfg)}
        (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (tmp / "history.json").write_text(json.dumps(state.history, indent=1) + "\n")
        (tmp / "scores.json").write_text(json.dumps(
            {k: v for k, v in result.items() if k != "history"}, indent=1) + "\n")
        if data.defects:
            blended = composite(fake[:8], data.hosts, data.side, 8, cfg.seed + 3).patches
            named_rows_png({"real defect crops": real[:8, 0], "their masks": real[:8, 1],
                            "generated crops": fake[:8, 0], "generated masks": fake[:8, 1],
                            "generated, blended onto clean patches": blended},
                           tmp / "samples.png", title=f"{kind}-{label}: real defects vs generated")
        else:
            real_vs_generated_png(real, fake, tmp / "samples.png", f"{kind}-{label}: real (top) vs generated")
        gan_curves_png(state.history, tmp / "curves.png", f"{kind}-{label}")
    return result


def _skipped(data: GanData, label: str, kind: str, gan_dir: Path) -> dict:
    """The folder of a class that gets no GAN: its scores say why, and nothing is sampled."""
    result = {"label": label, "gan": kind, "source": "defects", "crop_side": data.side,
              "real_patches": int(len(data.patches)), "real_crops": int(len(data.real)), "training_patches": 0,
              "steps": 0, "best_step": 0, "stopped": "skipped", "skipped": data.skip, "train_seconds": 0.0,
              "scores": [], "real_vs_real": [], "augmented_vs_real": [], "history": []}
    with atomic_dir(gan_dir / label) as tmp:
        (tmp / "scores.json").write_text(json.dumps({k: v for k, v in result.items() if k != "history"},
                                                    indent=1) + "\n")
        named_rows_png({"real defect crops": data.images[:8], "their masks": data.real[:8, 1]}, tmp / "samples.png",
                       title=f"{label}: no GAN ({data.skip})"[:120])
    return result


def references(real: np.ndarray, data: GanData, extractors: list[tuple[str, nn.Module]], cfg: GanConfig,
               aug: AugmentConfig) -> dict:
    """The two yardsticks of a GAN's FID/KID, per extractor: ``real_vs_real`` (two halves of
    the class's real patches or crops: the floor) and ``augmented_vs_real`` (traditionally
    augmented copies of them against the real ones: what P-TA adds)."""
    if len(real) < 4:
        return {"real_vs_real": [], "augmented_vs_real": []}
    halves = np.random.default_rng(cfg.seed).permutation(len(real))
    first, second = real[np.sort(halves[: len(real) // 2])], real[np.sort(halves[len(real) // 2:])]
    if real.ndim == 4:
        copies = augment_crops(real, len(real) + cfg.fid_samples, aug, cfg.seed + 3)[0][len(real):]
    else:
        copies, _ = augment_to_count(real, len(real) + cfg.fid_samples, aug.brightness, aug.contrast, cfg.seed + 3)
    return {"real_vs_real": _scores(first, second, data, extractors),
            "augmented_vs_real": _scores(real, copies, data, extractors)}


def load_generator(folder: Path | str) -> tuple[nn.Module, dict]:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    generator, _ = build_gan(config["kind"], config["patch"], config["latent"], config["width"],
                             config.get("upsample", "transposed"), config.get("channels", 1))
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


def recall_floor(cfg: GanConfig, scores: dict) -> float | None:
    """``gate_recall_factor`` x the first extractor's recall of one half of the real samples
    by the other (None when not scored, or the factor is 0)."""
    halves = scores.get("real_vs_real") or [{}]
    floor = halves[0].get("recall")
    return cfg.gate_recall_factor * floor if floor is not None and cfg.gate_recall_factor > 0 else None


def gate_settings(cfg: GanConfig, scores: dict) -> GateSettings:
    """The gate of ``cfg`` with its FID ceiling, the absolute one and the relative one
    (:func:`relative_fid_ceiling`), whichever is lower, and its recall floor
    (:func:`recall_floor`)."""
    ceilings = [c for c in [cfg.fid_ceiling, relative_fid_ceiling(cfg, scores)] if c is not None]
    return GateSettings(fid_ceiling=min(ceilings) if ceilings else None, min_recall=recall_floor(cfg, scores))


def synthesize_class(label: str, gan_dir: Path | str, data: GanData, cfg: GanConfig,
                     into: str = "synthetic") -> dict:
    """Write ``pgan_target - len(real patches)`` synthetic patches of ``label`` (never fewer than
    0) into ``<label>/<into>``, when they pass the quality gate; a refused class gets none
    (training tops it up by traditional augmentation) and ``gate.json`` there says why. With
    ``cfg.gate`` off they are written whatever the gate says (``gate.json`` still records its
    verdict). A defect GAN's crops are judged against the real crops, then blended onto
    ``data.hosts``."""
    folder = Path(gan_dir) / label
    patch = int(data.patches.shape[-1])
    count = max(0, cfg.pgan_target - len(data.patches))
    scores = json.loads((folder / "scores.json").read_text()) if (folder / "scores.json").is_file() else {}
    if scores.get("skipped"):
        gate = GateResult(False, [scores["skipped"]])
        return _write_set(folder / into, label, np.zeros((0, patch, patch), np.uint8), None, scores["gan"],
                          gate, cfg, True, count, skipped=True)
    generator, config = load_generator(folder)
    probe = generate(generator, max(count, 64), config["latent"], seed=cfg.seed + 2)
    fid = scores["scores"][0]["fid"] if scores.get("scores") else None
    recall = scores["scores"][0].get("recall") if scores.get("scores") else None
    images, masks = (probe[:, 0], probe[:, 1]) if probe.ndim == 4 else (probe, None)
    gate = check_synthetic(images, data.images, gate_settings(cfg, scores), fid, masks, recall)
    refused = cfg.gate and not gate.passed
    arrays = np.zeros((0, patch, patch), np.uint8)
    placed = None
    if count and not refused:
        if probe.ndim == 4:
            made = composite(probe[:count], data.hosts, data.side, count, cfg.seed + 3)
            arrays, placed = made.patches, made.masks
        else:
            arrays = probe[:count]
    preview = None
    if probe.ndim == 4:
        shown = composite(probe[:8], data.hosts, data.side, 8, cfg.seed + 3)
        preview = {"real defect crops": data.images[:8], "generated crops": images[:8], "generated masks": masks[:8],
                   "blended onto clean patches": shown.patches, "where": shown.masks}
    return _write_set(folder / into, label, arrays, placed, config["kind"], gate, cfg, refused, count, preview)


def _write_set(folder: Path, label: str, arrays: np.ndarray, placed: np.ndarray | None, kind: str, gate: GateResult,
               cfg: GanConfig, refused: bool, wanted: int, preview: dict | None = None, skipped: bool = False) -> dict:
    """``folder`` (a class's synthetic set) replaced whole: the patches, their masks when blended,
    the gate's verdict (``skipped``: the class has no GAN) and, for a defect GAN, the picture of
    what was blended."""
    with atomic_dir(folder) as tmp:
        write_synthetic(tmp, label, arrays, kind)
        if preview is not None:
            named_rows_png(preview, tmp / "blended.png",
                           title=f"{label}: {'refused by the gate' if refused else 'synthetic patches'}")
        if placed is not None:
            save_npy(tmp / "masks.npy", placed)
        (tmp / "gate.json").write_text(json.dumps(gate.to_dict() | {"enforced": cfg.gate, "refused": refused,
                                                                   "skipped": skipped, "wanted": wanted,
                                                                   "written": len(arrays)}, indent=1) + "\n")
    if skipped:
        log.info("%s: no GAN (%s); topped up by traditional augmentation", label, "; ".join(gate.reasons))
    elif refused:
        log.warning("%s: synthetic patches refused by the quality gate (%s); topped up by traditional "
                    "augmentation instead", label, "; ".join(gate.reasons))
    return {"synthetic": int(len(arrays)), "gate": gate.to_dict(), "refused": refused}


def run_class_gan(data: GanData, label: str, kind: str, gan_dir: Path | str, profile: Profile,
                  extractors: dict[str, nn.Module] | None = None) -> dict:
    """Train, score and synthesise for one class (the CLI's path; the pipeline splits it)."""
    result = train_class_gan(data, label, kind, gan_dir, profile, extractors)
    result |= synthesize_class(label, gan_dir, data, profile.gan)
    return result
