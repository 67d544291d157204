"""GAN training-step time on this CPU: contiguous vs channels-last networks.

Not a test: it prints the seconds of a generator step (WGAN-GP for SDG-GAN: n_critic critic
updates with the gradient penalty, then the generator's) of a profile's GAN recipe on random
patches, after warm-up steps, with the CPU's flags beside them. Training uses channels-last
(smh_ml.synthetic.gan.training.new_state); the contiguous row is what it replaced. Compare figures only
within one run.

    python benchmarks/gan_speed.py [--profile bench] [--patch 64] [--steps 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smh_ml.config.presets import get_profile  # noqa: E402
from smh_ml.config.schema import GanConfig
from smh_ml.hardware import describe  # noqa: E402
from smh_ml.synthetic.gan.training import new_state, to_gan_input, train_step  # noqa: E402


def seconds_per_step(kind: str, patch: int, cfg: GanConfig, channels_last: bool, steps: int) -> float:
    state = new_state(kind, patch, cfg)
    data = to_gan_input(np.random.default_rng(0).integers(0, 256, (300, patch, patch), dtype=np.uint8))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    state.generator.to(memory_format=layout)
    state.critic.to(memory_format=layout)
    data = data.contiguous(memory_format=layout)
    for _ in range(3):
        train_step(state, data, cfg)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, data, cfg)
    return (time.perf_counter() - start) / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    cfg = get_profile(args.profile).gan
    print(describe(), f"torch threads {torch.get_num_threads()}")
    print(f"profile {args.profile}: {args.patch} px, width {cfg.width}, batch {cfg.batch_size}, "
          f"n_critic {cfg.n_critic}, upsample {cfg.upsample}")
    for kind in ("sdg", "dcgan"):
        for channels_last in (False, True):
            seconds = seconds_per_step(kind, args.patch, cfg, channels_last, args.steps)
            layout = "channels-last" if channels_last else "contiguous   "
            print(f"{kind:6s} {layout} {seconds:6.3f} s a generator step", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
