"""What this CPU can do, recorded beside every speed figure.

Machines differ (some have AVX-512 VNNI and bf16, some only AVX2): training uses bf16 autocast
only where the CPU has native bf16 instructions, and every report says which precision ran.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def describe() -> dict:
    """Model name, cores and the vector extensions that matter for torch and onnxruntime."""
    flags = cpu_flags()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags, "bf16": has_native_bf16(),
            "amx": "amx_tile" in flags}


def training_precision(requested: str, cuda: bool = False) -> str:
    """``auto`` -> ``bf16`` on a GPU or a CPU with native bf16, else ``fp32``; an explicit
    ``bf16`` on a CPU without it is refused rather than emulated slowly."""
    if requested not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {requested!r}")
    native = cuda or has_native_bf16()
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        raise ValueError("precision bf16 asked for, but this CPU has no native bf16 (avx512_bf16/amx)")
    return requested
