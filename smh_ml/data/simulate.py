"""SIMULATED line-scan captures of servo motor housings: the project's embedded default data.

These images are made by this module, not taken by a camera. They stand in for the
paper's private SMH captures so that the pipeline runs end to end on a fresh machine; they
are never presented as real data (file names start with ``sim-`` and the set carries a
``.simulated.json`` that says so).

Geometry follows the paper: 3584 px high (one full turn of the part on the spinning jig),
products in six width categories inside a wider, black camera field, a metallic surface
with lighting variation and circumferential machining marks, and defects of the four paper
classes, each covering under 1% of the image, rendered with exact masks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from smh_ml.io import atomic_dir

CAPTURE_HEIGHT = 3584
WIDTH_CATEGORIES = (385, 570, 690, 935, 1065, 1575)
CAMERA_FIELD = 1700
CLEAN_CLASS = "defect-free"
DEFECT_CLASSES = ("imprinted", "pits", "roll-marks", "scratches")
# The paper's originals per class (479 for training + 130 for testing, Tables 4-5).
PAPER_ORIGINALS = {"defect-free": 240, "imprinted": 51, "pits": 209, "roll-marks": 56,
                   "scratches": 53}
MAX_DEFECT_FRACTION = 0.01


@dataclass(frozen=True)
class SimulatedCapture:
    label: str
    image: np.ndarray  # (H, W) uint8
    mask: np.ndarray  # (H, W) bool


def class_counts(total: int, minimum: int = 4) -> dict[str, int]:
    """Per-class counts in the paper's proportions, each at least ``minimum``."""
    paper_total = sum(PAPER_ORIGINALS.values())
    counts = {k: max(minimum, round(total * v / paper_total)) for k, v in PAPER_ORIGINALS.items()}
    counts[CLEAN_CLASS] += total - sum(counts.values())
    if counts[CLEAN_CLASS] < minimum:
        raise ValueError(f"count {total} is too small for {len(counts)} classes "
                         f"of at least {minimum}")
    return counts


def _surface(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Metallic surface: cylinder lighting, slow variation, machining marks, sensor noise."""
    x = (np.arange(width) + 0.5) / width
    lighting = 0.72 + 0.38 * np.sin(np.pi * x) ** 0.7 * rng.uniform(0.9, 1.1)
    y = np.arange(height) / height
    turn = np.ones(height)
    for k in range(1, 4):
        turn += rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * k * y + rng.uniform(0, 2 * np.pi))
    marks = ndimage.gaussian_filter1d(rng.normal(0, 7, width), sigma=max(0.6, 1.2 * scale))
    step = max(8, int(64 * scale))
    blotch = ndimage.zoom(rng.normal(0, 5, (height // step + 2, width // step + 2)), step,
                          order=1)[:height, :width]
    base = rng.uniform(115, 160)
    surface = base * lighting[None, :] * turn[:, None] + marks[None, :] * turn[:, None] + blotch
    surface += rng.normal(0, 3.0, (height, width))
    return surface


def _local_grid(center: tuple[float, float], radius: float, shape: tuple[int, int]):
    cy, cx = center
    r = int(np.ceil(radius)) + 2
    y0, y1 = max(0, int(cy) - r), min(shape[0], int(cy) + r + 1)
    x0, x1 = max(0, int(cx) - r), min(shape[1], int(cx) + r + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return (slice(y0, y1), slice(x0, x1)), yy - cy, xx - cx


def _imprinted(rng, surface, mask, center, s):
    a = rng.uniform(18, 40) * s + 2
    b = a * rng.uniform(0.6, 1.2)
    region, dy, dx = _local_grid(center, max(a, b), surface.shape)
    r2 = (dy / b) ** 2 + (dx / a) ** 2
    inside = r2 <= 1.0
    depth = np.where(inside, 1.0 - r2, 0.0)
    angle = rng.uniform(0, 2 * np.pi)
    shade = (np.cos(angle) * dx / a + np.sin(angle) * dy / b)
    surface[region] += inside * (-28 * depth + 35 * shade * np.sqrt(np.clip(depth, 0, 1)))
    mask[region] |= inside


def _pits(rng, surface, mask, center, s):
    spread = rng.uniform(20, 45) * s + 2
    for _ in range(rng.integers(3, 13)):
        c = (center[0] + rng.normal(0, spread / 2), center[1] + rng.normal(0, spread / 2))
        radius = rng.uniform(2.0, 5.0) * max(s, 0.4)
        region, dy, dx = _local_grid(c, radius, surface.shape)
        r = np.sqrt(dy ** 2 + dx ** 2) / radius
        inside = r <= 1.0
        surface[region] -= inside * rng.uniform(45, 75) * (1.0 - 0.5 * r ** 2)
        mask[region] |= inside


def _band(dy, dx, angle, length, thickness):
    along = np.cos(angle) * dx + np.sin(angle) * dy
    across = -np.sin(angle) * dx + np.cos(angle) * dy
    return (np.abs(along) <= length / 2) & (np.abs(across) <= thickness / 2), across


def _roll_marks(rng, surface, mask, center, s):
    count = int(rng.integers(3, 7))
    spacing = rng.uniform(8, 16) * s + 1.5
    length = rng.uniform(40, 120) * s + 4
    thickness = rng.uniform(2, 4) * s + 1
    angle = rng.normal(0, np.deg2rad(6))
    darkness = rng.uniform(20, 35)
    for k in range(count):
        c = (center[0] + (k - count / 2) * spacing, center[1] + rng.normal(0, 2 * s))
        region, dy, dx = _local_grid(c, length / 2 + thickness, surface.shape)
        inside, across = _band(dy, dx, angle, length, thickness)
        soft = 1.0 - 0.5 * (np.abs(across) / (thickness / 2 + 1e-6)) ** 2
        surface[region] -= inside * darkness * soft
        mask[region] |= inside


def _scratch(rng, surface, mask, center, s):
    length = rng.uniform(150, 500) * s + 8
    thickness = max(1.0, rng.uniform(1.5, 3.0) * s)
    angle = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.3, 0.3)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    strength = rng.uniform(40, 65)
    region, dy, dx = _local_grid(center, length / 2 + thickness + abs(bend) * length / 4,
                                 surface.shape)
    along = np.cos(angle) * dx + np.sin(angle) * dy
    across = -np.sin(angle) * dx + np.cos(angle) * dy - bend * (along ** 2) / length
    inside = (np.abs(along) <= length / 2) & (np.abs(across) <= thickness / 2)
    surface[region] += inside * sign * strength
    mask[region] |= inside


_RENDERERS = {"imprinted": _imprinted, "pits": _pits, "roll-marks": _roll_marks,
              "scratches": _scratch}


def simulate_capture(label: str, rng: np.random.Generator, scale: float = 1.0) -> SimulatedCapture:
    """One simulated capture of class ``label`` (clean or one of the four paper defects)."""
    if label != CLEAN_CLASS and label not in _RENDERERS:
        raise ValueError(f"cannot simulate class {label!r}; known: {CLEAN_CLASS}, "
                         f"{', '.join(DEFECT_CLASSES)}")
    height = max(16, round(CAPTURE_HEIGHT * scale))
    product_w = max(8, round(rng.choice(WIDTH_CATEGORIES) * scale))
    field_w = max(product_w, round(CAMERA_FIELD * scale))
    touches_edge = rng.random() < 0.15
    left = 0 if touches_edge else int(rng.integers(0, field_w - product_w + 1))
    surface = _surface(rng, height, product_w, scale)
    product_mask = np.zeros((height, product_w), dtype=bool)
    if label != CLEAN_CLASS:
        for _attempt in range(20):
            trial_surface, trial_mask = surface.copy(), np.zeros_like(product_mask)
            margin_x = min(product_w // 2 - 1, max(2, int(0.1 * product_w)))
            center = (rng.uniform(0.05, 0.95) * height,
                      rng.uniform(margin_x, product_w - margin_x))
            _RENDERERS[label](rng, trial_surface, trial_mask, center, scale)
            fraction = trial_mask.sum() / (height * field_w)
            if 0 < fraction < MAX_DEFECT_FRACTION:
                surface, product_mask = trial_surface, trial_mask
                break
        else:
            raise RuntimeError(f"could not render a {label} defect under 1% of the image")
    image = np.clip(rng.normal(6, 2.5, (height, field_w)), 0, 255)
    image[:, left:left + product_w] = np.clip(surface, 0, 255)
    mask = np.zeros((height, field_w), dtype=bool)
    mask[:, left:left + product_w] = product_mask
    return SimulatedCapture(label, np.round(image).astype(np.uint8), mask)


def simulate_captures(dest: Path | str, seed: int = 0, count: int = 609, scale: float = 1.0,
                      image_format: str = "jpg", overwrite: bool = False) -> dict[str, int]:
    """Write ``count`` simulated captures under ``dest`` in the capture-folder convention.

    Deterministic for a seed. Written to a temporary folder and renamed into place, so an
    interrupted run never leaves a half-written set; an existing non-empty ``dest`` is only
    replaced with ``overwrite``. Returns the per-class counts.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be png or jpg, not {image_format!r}")
    counts = class_counts(count)
    with atomic_dir(Path(dest), overwrite=overwrite) as tmp:
        index = 0
        for label, n in counts.items():
            folder = tmp / label
            folder.mkdir(parents=True)
            for _ in range(n):
                rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
                capture = simulate_capture(label, rng, scale)
                name = f"sim-{index:05d}"
                save_kwargs = {"quality": 92} if image_format == "jpg" else {"compress_level": 6}
                Image.fromarray(capture.image).save(folder / f"{name}.{image_format}", **save_kwargs)
                if label != CLEAN_CLASS:
                    Image.fromarray(capture.mask.astype(np.uint8) * 255).save(
                        folder / f"{name}.mask.png", optimize=False)
                index += 1
        meta = {"simulated": True,
                "note": "SIMULATED captures made by smh_ml.data.simulate; not real camera data.",
                "seed": seed, "count": count, "scale": scale, "format": image_format,
                "classes": counts}
        (tmp / ".simulated.json").write_text(json.dumps(meta, indent=2) + "\n")
    return counts
