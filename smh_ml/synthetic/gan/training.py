"""GAN training: WGAN-GP for SDG-GAN (Eq. 8-10), BCE for the DCGAN baseline.

Sized in generator steps. For the few hundred real patches of a defect class, the CPU
profiles switch on what the limited-data GAN literature found to work: DiffAugment on every
image the critic sees (:mod:`smh_ml.synthetic.gan.diffaugment`), an exponential moving average of the
generator's weights for sampling, and FID checkpoints over training that keep the best
weights and stop on a plateau. The ``paper`` profile keeps the paper's plain recipe.

Every random draw (batches, latent vectors, interpolation weights, augmentations) comes from
one seeded ``torch.Generator`` whose state is checkpointed with the networks, the EMA and the
optimisers, so a run stopped and resumed ends in exactly the state of an uninterrupted one.
"""

from __future__ import annotations

import copy
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

from smh_ml.config.schema import GanConfig
from smh_ml.io import atomic_write_bytes
from smh_ml.synthetic.gan.diffaugment import diff_augment
from smh_ml.synthetic.gan.networks import build_gan

log = logging.getLogger(__name__)


def channels_of(arrays: np.ndarray) -> int:
    """Image channels of GAN training data: (N, H, W) grey patches have one, (N, C, H, W) C."""
    return int(arrays.shape[1]) if arrays.ndim == 4 else 1


def to_gan_input(arrays: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float (N, C, H, W) in [-1, 1], the generator's tanh range."""
    tensor = torch.from_numpy(np.array(arrays, dtype=np.float32))
    return (tensor.unsqueeze(1) if arrays.ndim == 3 else tensor).div_(127.5).sub_(1.0)


def from_gan_output(images: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) -> uint8, (N, H, W) for one channel and (N, C, H, W) for more."""
    images = images.detach().cpu()
    images = images.squeeze(1) if images.shape[1] == 1 else images
    return ((images.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()


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
    ema: nn.Module | None = None
    """The generator's exponential moving average (``cfg.ema`` > 0): the one sampled."""
    step: int = 0
    """Generator steps done."""
    history: list[dict] = field(default_factory=list)
    """Mean losses per logged interval, and the FID/KID checkpoints (``fid`` key)."""
    best: dict | None = None
    """The FID checkpoint with the lowest FID so far: step, fid and the sampled weights."""
    stopped: str = ""
    """Why training ended early ("plateau"), or ""."""
    pending: dict[str, float] = field(default_factory=dict)
    """Loss sums of the steps since the last history record (checkpointed, so a resumed run
    logs the same means as an uninterrupted one)."""

    def sampler(self) -> nn.Module:
        """The network that draws samples: the EMA generator when there is one."""
        return self.ema if self.ema is not None else self.generator


def new_state(kind: str, patch: int, cfg: GanConfig, channels: int = 1) -> GanState:
    """Fresh networks and optimisers. The networks are channels-last, the layout oneDNN's CPU
    convolutions prefer: a bench SDG-GAN step (64 px, width 0.25, batch 32) took 0.26-0.29 s
    instead of 0.34-0.43 s on 2 cores (``benchmarks/gan_speed.py``, docs/GAN.md)."""
    torch.manual_seed(cfg.seed)  # initial weights are part of the seeded run
    generator, critic = (net.to(memory_format=torch.channels_last)
                         for net in build_gan(kind, patch, cfg.latent, cfg.width, cfg.upsample, channels))
    betas = tuple(cfg.betas)
    ema = copy.deepcopy(generator).requires_grad_(False) if cfg.ema > 0 else None
    return GanState(kind, generator, critic,
                    torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas),
                    torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr or cfg.lr, betas=betas),
                    torch.Generator().manual_seed(cfg.seed), ema)


TRAINING_FIELDS = ("latent", "width", "epochs", "steps", "batch_size", "n_critic", "gp_lambda", "lr", "critic_lr",
                   "betas", "diffaugment", "ema", "eval_every", "patience", "seed")
"""The GanConfig fields that change what training computes (a checkpoint belongs to them)."""


def total_steps(cfg: GanConfig, n: int, kind: str) -> int:
    """Generator steps of a run: ``cfg.steps``, or ``cfg.epochs`` passes over ``n`` patches
    (a WGAN-GP generator step uses ``n_critic`` batches, a DCGAN step one)."""
    if cfg.steps:
        return int(cfg.steps)
    batches = max(1, -(-n // cfg.batch_size)) * cfg.epochs
    return max(1, batches // (cfg.n_critic if kind == "sdg" else 1))


def training_inputs_id(arrays: np.ndarray, kind: str, cfg: GanConfig, score_id: str = "") -> str:
    """What a GAN checkpoint was computed from: the training patches, the kind, the settings
    that shape training and, with FID checkpoints, the extractor that scores them (its FIDs pick
    the kept weights and the plateau). A checkpoint with another id is never resumed."""
    digest = hashlib.sha256()
    digest.update(f"{kind}|{arrays.shape}|{arrays.dtype}|".encode())
    if score_id:
        digest.update(f"score:{score_id}|".encode())
    fields = {f: getattr(cfg, f) for f in TRAINING_FIELDS}
    if cfg.upsample != "transposed":  # named only when changed, so checkpoints from before it resume
        fields["upsample"] = cfg.upsample
    if cfg.mode_seeking:  # likewise
        fields["mode_seeking"] = cfg.mode_seeking
    digest.update(json.dumps(fields, sort_keys=True, default=list).encode())
    digest.update(np.ascontiguousarray(arrays).tobytes())
    return digest.hexdigest()[:24]


def save_checkpoint(state: GanState, path: Path | str, inputs: str = "") -> Path:
    buffer = io.BytesIO()
    torch.save({"kind": state.kind, "step": state.step, "history": state.history, "inputs": inputs,
                "generator": state.generator.state_dict(), "critic": state.critic.state_dict(),
                "ema": state.ema.state_dict() if state.ema is not None else None,
                "opt_g": state.opt_g.state_dict(), "opt_c": state.opt_c.state_dict(),
                "best": state.best, "stopped": state.stopped, "pending": state.pending,
                "rng": state.rng.get_state()}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str, patch: int, cfg: GanConfig, channels: int = 1) -> GanState:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = new_state(saved["kind"], patch, cfg, channels)
    state.generator.load_state_dict(saved["generator"])
    state.critic.load_state_dict(saved["critic"])
    if state.ema is not None:
        state.ema.load_state_dict(saved["ema"])
    state.opt_g.load_state_dict(saved["opt_g"])
    state.opt_c.load_state_dict(saved["opt_c"])
    state.rng.set_state(saved["rng"])
    state.step, state.history = int(saved["step"]), list(saved["history"])
    state.best, state.stopped, state.pending = saved["best"], saved["stopped"], dict(saved["pending"])
    return state


def _latent(n: int, cfg: GanConfig, rng: torch.Generator) -> torch.Tensor:
    return torch.randn(n, cfg.latent, generator=rng)


def _real(data: torch.Tensor, cfg: GanConfig, rng: torch.Generator) -> torch.Tensor:
    """A batch of training patches drawn at random (with replacement: resumable from the rng alone)."""
    return data[torch.randint(len(data), (min(cfg.batch_size, len(data)),), generator=rng)]


def critic_view(x: torch.Tensor, cfg: GanConfig, rng: torch.Generator) -> torch.Tensor:
    """What the critic sees of a real OR a generated batch: the same DiffAugment policy for both."""
    return diff_augment(x, cfg.diffaugment, rng) if cfg.diffaugment else x


def _step_wgan(state: GanState, data: torch.Tensor, cfg: GanConfig) -> dict:
    """One generator step of WGAN-GP: ``n_critic`` critic updates (Eq. 9-10), then Eq. 8."""
    g, c, rng = state.generator, state.critic, state.rng
    sums = {"critic_loss": 0.0, "gradient_penalty": 0.0, "wasserstein": 0.0}
    for _ in range(cfg.n_critic):
        real = _real(data, cfg, rng)
        with torch.no_grad():
            fake = g(_latent(len(real), cfg, rng))
        real, fake = critic_view(real, cfg, rng), critic_view(fake, cfg, rng)
        c_real, c_fake = c(real).mean(), c(fake).mean()
        gp = gradient_penalty(c, real, fake, rng)
        loss_c = c_fake - c_real + cfg.gp_lambda * gp  # Eq. 9
        state.opt_c.zero_grad(set_to_none=True)
        loss_c.backward()
        state.opt_c.step()
        sums["critic_loss"] += float(loss_c.detach()) / cfg.n_critic
        sums["gradient_penalty"] += float(gp.detach()) / cfg.n_critic
        sums["wasserstein"] += float((c_real - c_fake).detach()) / cfg.n_critic
    z = _latent(cfg.batch_size, cfg, rng)
    fake = g(z)
    adversarial = -c(critic_view(fake, cfg, rng)).mean()  # Eq. 8
    loss_g, extra = adversarial, {}
    if cfg.mode_seeking > 0:
        ratio = mode_seeking_ratio(fake, z)
        loss_g = adversarial + cfg.mode_seeking / (ratio + 1e-5)
        extra["mode_seeking_ratio"] = float(ratio.detach())
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    return sums | {"generator_loss": float(adversarial.detach())} | extra


def mode_seeking_ratio(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean image distance over mean latent distance between the two halves of a batch (Mao et
    al. 2019, "Mode seeking GANs"). A generator that draws one image for every latent has a ratio
    near 0; adding ``weight / ratio`` to its loss makes distinct latents draw distinct images."""
    half = len(z) // 2
    images = (fake[:half] - fake[half:2 * half]).abs().mean()
    return images / (z[:half] - z[half:2 * half]).abs().mean()


def _step_dcgan(state: GanState, data: torch.Tensor, cfg: GanConfig) -> dict:
    """One discriminator and one generator update with the BCE loss (the Table 1 baseline)."""
    g, d, rng = state.generator, state.critic, state.rng
    bce = nn.BCEWithLogitsLoss()
    real = critic_view(_real(data, cfg, rng), cfg, rng)
    fake = g(_latent(len(real), cfg, rng))
    ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
    loss_d = bce(d(real), ones) + bce(d(critic_view(fake.detach(), cfg, rng)), zeros)
    state.opt_c.zero_grad(set_to_none=True)
    loss_d.backward()
    state.opt_c.step()
    loss_g = bce(d(critic_view(fake, cfg, rng)), ones)
    state.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    state.opt_g.step()
    return {"critic_loss": float(loss_d.detach()), "generator_loss": float(loss_g.detach())}


def train_step(state: GanState, data: torch.Tensor, cfg: GanConfig) -> dict:
    """One generator step of ``state.kind`` on the (N, C, H, W) training tensor ``data`` (C = 1,
    or 2 for a defect crop and its mask); the step's losses."""
    return (_step_wgan if state.kind == "sdg" else _step_dcgan)(state, data, cfg)


@torch.no_grad()
def update_ema(ema: nn.Module, generator: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * generator; BatchNorm statistics are copied."""
    for e, p in zip(ema.parameters(), generator.parameters()):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), generator.buffers()):
        e.copy_(b)


def _evaluate(state: GanState, cfg: GanConfig, score: Callable[[np.ndarray], dict], patience_left: int) -> int:
    """A FID/KID checkpoint of the sampled generator; keeps the best weights; returns the
    number of checkpoints left before a plateau stops training."""
    fake = generate(state.sampler(), cfg.fid_samples, cfg.latent, seed=cfg.seed + 1)
    scored = score(fake)
    record = {"step": state.step, "fid": float(scored["fid"]), "extractor": scored.get("extractor", "")}
    if "kid_mean" in scored:
        record["kid"] = float(scored["kid_mean"])
    state.history.append(record)
    if state.best is None or record["fid"] < state.best["fid"]:
        weights = {k: v.detach().clone() for k, v in state.sampler().state_dict().items()}
        state.best = {"step": state.step, "fid": record["fid"], "weights": weights}
        return cfg.patience
    return patience_left - 1


def train_gan(arrays: np.ndarray, kind: str, cfg: GanConfig, checkpoint: Path | str | None = None,
              stop_after: int | None = None, desc: str = "gan",
              score: Callable[[np.ndarray], dict] | None = None, score_id: str = "") -> GanState:
    """Train a GAN on uint8 patches for :func:`total_steps` generator steps.

    - Resumes from ``checkpoint`` only when it was computed from the same patches, kind and
      training settings (:func:`training_inputs_id`); a new data version or a changed setting
      starts from scratch. The checkpoint is written every ``cfg.checkpoint_every`` steps and at
      the end; ``stop_after`` ends the run after that many steps in total (as a crash would).
    - With ``score`` (uint8 samples -> {"fid", "kid_mean", "extractor"}) and ``cfg.eval_every``,
      the sampled generator is scored every ``eval_every`` steps. The weights of the best FID
      are kept and become the result's sampler. Training stops early after ``cfg.patience``
      checkpoints in a row without a better FID (a plateau). ``score_id`` names the scorer
      (:func:`smh_ml.synthetic.fid.extractor_id`): a checkpoint scored by another one is not resumed.
    """
    if torch.cuda.is_available():
        log.info("CUDA is present but GAN training here runs on the CPU for exact resumes")
    patch = arrays.shape[-1]
    ckpt = Path(checkpoint) if checkpoint else None
    inputs = training_inputs_id(arrays, kind, cfg, score_id if score is not None and cfg.eval_every > 0 else "")
    state = None
    if ckpt and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
        if saved.get("inputs") == inputs and "step" in saved:  # an interrupted (or finished) run: resume
            state = load_checkpoint(ckpt, patch, cfg, channels_of(arrays))
        else:
            log.warning("%s: checkpoint was trained on other patches or settings: training from scratch", ckpt)
    state = state or new_state(kind, patch, cfg, channels_of(arrays))
    if state.kind != kind:
        raise ValueError(f"{ckpt}: checkpoint is a {state.kind} GAN, not {kind}")
    data = to_gan_input(arrays).contiguous(memory_format=torch.channels_last)
    total = total_steps(cfg, len(arrays), kind)
    last = total if stop_after is None else min(total, stop_after)
    log_every = max(1, total // 50)
    evaluating = score is not None and cfg.eval_every > 0
    patience_left = cfg.patience
    if evaluating and state.best is not None:  # a resumed run: checkpoints since the best count
        patience_left -= sum(1 for h in state.history if "fid" in h and h["step"] > state.best["step"])
    bar = tqdm(range(state.step, last), desc=desc, leave=False, disable=None)
    for _ in bar:
        if state.stopped:
            break
        state.generator.train()
        state.critic.train()
        for key, value in train_step(state, data, cfg).items():
            state.pending[key] = state.pending.get(key, 0.0) + value
        if state.ema is not None:
            update_ema(state.ema, state.generator, cfg.ema)
        state.step += 1
        if state.step % log_every == 0 or state.step == total:
            steps_summed = state.step - max((h["step"] for h in state.history if "generator_loss" in h), default=0)
            record = {"step": state.step, **{k: v / steps_summed for k, v in state.pending.items()}}
            state.history.append(record)
            state.pending = {}
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "step"})
            log.info("%s step %d/%d %s", desc, state.step, total,
                     " ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "step"))
        if evaluating and (state.step % cfg.eval_every == 0 or state.step == total):
            patience_left = _evaluate(state, cfg, score, patience_left)
            log.info("%s step %d FID %.2f (best %.2f at step %d)", desc, state.step, state.history[-1]["fid"],
                     state.best["fid"], state.best["step"])
            if cfg.patience and patience_left <= 0:
                state.stopped = "plateau"
        if ckpt and (state.step % cfg.checkpoint_every == 0 or state.step == last or state.stopped):
            save_checkpoint(state, ckpt, inputs)
    if state.best is not None:  # the sampler ends at its best FID checkpoint
        state.sampler().load_state_dict(state.best["weights"])
    state.generator.eval()
    state.critic.eval()
    state.sampler().eval()
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
