"""Training-step throughput on this CPU: fp32 vs bf16 autocast, with and without channels-last.

Not a test: it prints figures (patches/s over a few AdamW steps after one warm-up step, random
data), with the CPU's flags beside them. Compare figures only within one run.

    python benchmarks/training_speed.py [--steps 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smh_ml.hardware import describe, has_native_bf16  # noqa: E402
from smh_ml.models import build  # noqa: E402

CASES = (("efficientnet_lite0", 64, 64), ("efficientnet_lite0", 224, 32), ("inception_cnn", 64, 64))


def patches_per_second(arch: str, size: int, batch: int, bf16: bool, channels_last: bool, steps: int) -> float:
    model = build(arch, 5, size, pretrained=arch == "efficientnet_lite0").train()
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(batch, 1, size, size), torch.randint(0, 5, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return batch * steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(describe(), f"torch threads {torch.get_num_threads()}")
    for arch, size, batch in CASES:
        for bf16 in (False, True) if has_native_bf16() else (False,):
            for channels_last in (False, True):
                rate = patches_per_second(arch, size, batch, bf16, channels_last, args.steps)
                print(f"{arch:18s} {size:4d} px batch {batch:3d} {'bf16' if bf16 else 'fp32'} "
                      f"{'channels-last' if channels_last else 'contiguous   '} {rate:7.1f} patches/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
