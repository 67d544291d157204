"""Robustness (paper VI, Figs. 12-13): accuracy under perturbed inputs.

Each perturbation takes uint8 patches and a severity level and returns perturbed uint8
patches: Gaussian blur (sigma, px), Gaussian noise (std, grey levels), extreme brightness
up and down (gain), and faint natural-looking surface scratches (count per patch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

SEVERITIES: dict[str, tuple[float, ...]] = {
    "blur": (0.5, 1.0, 2.0, 3.0),
    "noise": (5.0, 10.0, 20.0, 30.0),
    "brightness_up": (1.25, 1.5, 2.0, 2.5),
    "brightness_down": (0.8, 0.6, 0.4, 0.25),
    "scratches": (1, 2, 4, 8),
}


def blur(patches: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    out = ndimage.gaussian_filter(patches.astype(np.float32), sigma=(0, sigma, sigma))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def noise(patches: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    out = patches.astype(np.float32) + rng.normal(0, std, patches.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def brightness(patches: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.round(patches.astype(np.float32) * gain), 0, 255).astype(np.uint8)


def scratches(patches: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """Faint thin curved lines (5-15 grey levels, 1 px wide) like handling marks."""
    out = patches.astype(np.float32).copy()
    n, h, w = patches.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        for _ in range(int(count)):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            angle = rng.uniform(0, np.pi)
            length = rng.uniform(0.3, 0.9) * max(h, w)
            bend = rng.uniform(-0.5, 0.5)
            along = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
            across = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy) - bend * along ** 2 / length
            line = (np.abs(along) <= length / 2) & (np.abs(across) <= 0.6)
            out[i][line] += rng.choice([-1.0, 1.0]) * rng.uniform(5, 15)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


PERTURBATIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "blur": blur, "noise": noise, "brightness_up": brightness, "brightness_down": brightness,
    "scratches": scratches,
}


def perturb(patches: np.ndarray, kind: str, severity: float, seed: int = 0) -> np.ndarray:
    if kind not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {kind!r}; known: {', '.join(PERTURBATIONS)}")
    return PERTURBATIONS[kind](patches, severity, np.random.default_rng(seed))


def robustness_table(evaluate: Callable[[Callable[[np.ndarray], np.ndarray] | None], float],
                     severities: dict[str, tuple[float, ...]] = SEVERITIES, seed: int = 0) -> pd.DataFrame:
    """Accuracy from ``evaluate(transform)`` for the clean input and every perturbation."""
    rows = [{"perturbation": "none", "severity": 0.0, "accuracy": evaluate(None)}]
    for kind, levels in severities.items():
        for level in levels:
            rows.append({"perturbation": kind, "severity": float(level),
                         "accuracy": evaluate(lambda p, k=kind, s=level: perturb(p, k, s, seed))})
    return pd.DataFrame(rows)


def plot_robustness(table: pd.DataFrame, path: Path | str, title: str = "") -> Path:
    import matplotlib.pyplot as plt

    from smh_ml.evaluation.plots import save_figure

    kinds = [k for k in table["perturbation"].unique() if k != "none"]
    base = float(table.loc[table["perturbation"] == "none", "accuracy"].iloc[0])
    fig, axes = plt.subplots(1, len(kinds), figsize=(3 * len(kinds), 3), sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = table[table["perturbation"] == kind]
        ax.plot(part["severity"], part["accuracy"], "o-")
        ax.axhline(base, color="grey", linestyle="--", linewidth=1)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("image accuracy")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
