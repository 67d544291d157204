"""GAN training: WGAN-GP for SDG-GAN (Eq. 8-10), BCE for the DCGAN baseline.

Every random draw (shuffling, latent vectors, interpolation weights) comes from one seeded
``torch.Generator`` whose state is checkpointed with the networks and optimisers, so a run
stopped and resumed ends in exactly the state of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from smh_ml.gan.networks import build_gan
from smh_ml.io import atomic_write_bytes
from smh_ml.profiles import GanConfig

log = logging.getLogger(__name__)


def to_gan_input(arrays: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1], the generator's tanh range."""
    return torch.from_numpy(np.array(arrays, dtype=np.float32)).unsqueeze(1).div_(127.5).sub_(1.0)


def from_gan_output(images: torch.Tensor) -> np.ndarray:
    return ((images.detach().cpu().squeeze(1).clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 10: E[(||grad C(x_hat)||_2 - 1)^2] on random interpolates of real and fake."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real.device)
    x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    grads = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    return ((grads.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


@dataclass
class GanState:
    kind: str
    generator: nn.Module
    critic: nn.Module
    opt_g: torch.optim.Optimizer
    opt_c: torch.optim.Optimizer
    rng: torch.Generator
    epoch: int = 0
    history: list[dict] = field(default_factory=list)


def new_state(kind: str, patch: int, cfg: GanConfig) -> GanState:
    torch.manual_seed(cfg.seed)  # initial weights are part of the seeded run
    generator, critic = build_gan(kind, patch, cfg.latent, cfg.width)
    betas = tuple(cfg.betas)
    return GanState(kind, generator, critic,
                    torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas),
                    torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=betas),
                    torch.Generator().manual_seed(cfg.seed))


TRAINING_FIELDS = ("latent", "width", "epochs", "batch_size", "n_critic", "gp_lambda", "lr", "betas", "seed")
"""The GanConfig fields that change what training computes (a checkpoint belongs to them)."""


def training_inputs_id(arrays: np.ndarray, kind: str, cfg: GanConfig) -> str:
    """What a GAN checkpoint was computed from: the training patches, the kind and the
    settings that shape training. A checkpoint with another id is never resumed."""
    digest = hashlib.sha256()
    digest.update(f"{kind}|{arrays.shape}|{arrays.dtype}|".encode())
    digest.update(json.dumps({f: getattr(cfg, f) for f in TRAINING_FIELDS}, sort_keys=True, default=list).encode())
    digest.update(np.ascontiguousarray(arrays).tobytes())
    return digest.hexdigest()[:24]


def save_checkpoint(state: GanState, path: Path | str, inputs: str = "") -> Path:
    buffer = io.BytesIO()
    torch.save({"kind": state.kind, "epoch": state.epoch, "history": state.history, "inputs": inputs,
                "generator": state.generator.state_dict(), "critic": state.critic.state_dict(),
                "opt_g": state.opt_g.state_dict(), "opt_c": state.opt_c.state_dict(),
                "rng": state.rng.get_state()}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str, patch: int, cfg: GanConfig) -> GanState:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = new_state(saved["kind"], patch, cfg)
    state.generator.load_state_dict(saved["generator"])
    state.critic.load_state_dict(saved["critic"])
    state.opt_g.load_state_dict(saved["opt_g"])
    state.opt_c.load_state_dict(saved["opt_c"])
    state.rng.set_state(saved["rng"])
    state.epoch, state.history = int(saved["epoch"]), list(saved["history"])
    return state


def _latent(n: int, cfg: GanConfig, rng: torch.Generator) -> torch.Tensor:
    return torch.randn(n, cfg.latent, generator=rng)


def _epoch_wgan(state: GanState, data: torch.Tensor, cfg: GanConfig) -> dict:
    g, c, rng = state.generator, state.critic, state.rng
    order = torch.randperm(len(data), generator=rng)
    sums = {"critic_loss": 0.0, "generator_loss": 0.0, "gradient_penalty": 0.0, "wasserstein": 0.0}
    steps_c = steps_g = 0
    for i, start in enumerate(range(0, len(order) - 1, cfg.batch_size)):
        real = data[order[start:start + cfg.batch_size]]
        with torch.no_grad():
            fake = g(_latent(len(real), cfg, rng))
        c_real, c_fake = c(real).mean(), c(fake).mean()
        gp = gradient_penalty(c, real, fake, rng)
        loss_c = c_fake - c_real + cfg.gp_lambda * gp  # Eq. 9
        state.opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        state.opt_c.step()
        sums["critic_loss"] += float(loss_c.detach())
        sums["gradient_penalty"] += float(gp.detach())
        sums["wasserstein"] += float((c_real - c_fake).detach())
        steps_c += 1
        if (i + 1) % cfg.n_critic == 0:
            loss_g = -c(g(_latent(cfg.batch_size, cfg, rng))).mean()  # Eq. 8
            state.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            state.opt_g.step()
            sums["generator_loss"] += float(loss_g.detach())
            steps_g += 1
    return {k: v / max(steps_g if k == "generator_loss" else steps_c, 1) for k, v in sums.items()}


def _epoch_dcgan(state: GanState, data: torch.Tensor, cfg: GanConfig) -> dict:
    g, d, rng = state.generator, state.critic, state.rng
    bce = nn.BCEWithLogitsLoss()
    order = torch.randperm(len(data), generator=rng)
    sums, steps = {"critic_loss": 0.0, "generator_loss": 0.0}, 0
    for start in range(0, len(order) - 1, cfg.batch_size):
        real = data[order[start:start + cfg.batch_size]]
        fake = g(_latent(len(real), cfg, rng))
        ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
        loss_d = bce(d(real), ones) + bce(d(fake.detach()), zeros)
        state.opt_c.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_c.step()
        loss_g = bce(d(fake), ones)
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        state.opt_g.step()
        sums["critic_loss"] += float(loss_d.detach())
        sums["generator_loss"] += float(loss_g.detach())
        steps += 1
    return {k: v / max(steps, 1) for k, v in sums.items()}


def train_gan(arrays: np.ndarray, kind: str, cfg: GanConfig, checkpoint: Path | str | None = None,
              stop_after: int | None = None, desc: str = "gan",
              on_epoch: Callable[[int, dict], None] | None = None) -> GanState:
    """Train a GAN on uint8 patches for ``cfg.epochs`` epochs, resuming from ``checkpoint``
    only when it was computed from the same patches, kind and training settings
    (:func:`training_inputs_id`); a new data version or a changed setting starts from scratch.

    The checkpoint is written every ``cfg.checkpoint_every`` epochs and at the end;
    ``stop_after`` ends the run early after that many epochs in total (as a crash would).
    """
    if torch.cuda.is_available():
        log.info("CUDA is present but GAN training here runs on the CPU for exact resumes")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    patch = arrays.shape[-1]
    ckpt = Path(checkpoint) if checkpoint else None
    inputs = training_inputs_id(arrays, kind, cfg)
    state = None
    if ckpt and ckpt.exists():
        saved_inputs = torch.load(ckpt, map_location="cpu", weights_only=True).get("inputs")
        if saved_inputs == inputs:  # an interrupted (or finished) run of the same inputs: resume
            state = load_checkpoint(ckpt, patch, cfg)
        else:
            log.warning("%s: checkpoint was trained on other patches or settings: training from scratch", ckpt)
    state = state or new_state(kind, patch, cfg)
    if state.kind != kind:
        raise ValueError(f"{ckpt}: checkpoint is a {state.kind} GAN, not {kind}")
    data = to_gan_input(arrays)
    step = _epoch_wgan if kind == "sdg" else _epoch_dcgan
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = tqdm(range(state.epoch, last), desc=desc, leave=False, disable=None)
    for epoch in bar:
        state.generator.train()
        state.critic.train()
        record = {"epoch": epoch + 1, **step(state, data, cfg)}
        state.epoch = epoch + 1
        state.history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
        log.info("%s epoch %d/%d %s", desc, epoch + 1, cfg.epochs,
                 " ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        if on_epoch:
            on_epoch(epoch, record)
        if ckpt and (state.epoch % cfg.checkpoint_every == 0 or state.epoch == last):
            save_checkpoint(state, ckpt, inputs)
    state.generator.eval()
    state.critic.eval()
    return state


@torch.no_grad()
def generate(generator: nn.Module, count: int, latent: int, seed: int = 0,
             batch_size: int = 256) -> np.ndarray:
    """``count`` uint8 patches from a trained generator, reproducible for a seed."""
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    parts = [from_gan_output(generator(torch.randn(min(batch_size, count - i), latent, generator=rng)))
             for i in range(0, count, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 1, 1), np.uint8)
