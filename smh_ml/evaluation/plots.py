"""Pictures for people: sample grids of patches per class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from smh_ml.io import atomic_write_bytes  # noqa: E402


def _show_random(axes, arrays: np.ndarray, rng: np.random.Generator, frame: bool = False) -> None:
    """Draw up to ``len(axes)`` patches picked at random (without repeats) from ``arrays``,
    one per axis; leftover axes stay empty. ``frame`` keeps a thin border around each."""
    picks = rng.choice(len(arrays), min(len(axes), len(arrays)), replace=False) if len(arrays) else []
    for c, ax in enumerate(axes):
        if frame:
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.axis("off")
        if c < len(picks):
            ax.imshow(arrays[picks[c]], cmap="gray", vmin=0, vmax=255)


def sample_grid(arrays: np.ndarray, labels: pd.Series, path: Path | str, per_class: int = 8,
                seed: int = 0, title: str = "") -> Path:
    """Save a PNG with one row of up to ``per_class`` random samples for each class."""
    classes = sorted(labels.unique())
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(classes), per_class, squeeze=False,
                             figsize=(per_class * 1.2, len(classes) * 1.3))
    for r, label in enumerate(classes):
        rows = np.flatnonzero(labels.to_numpy() == label)
        _show_random(axes[r], arrays[rows], rng)
        axes[r][0].set_title(f"{label} ({len(rows)})", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=80)


def save_figure(fig, path: Path | str, dpi: int = 90) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    import io

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def confusion_matrix_png(matrix, names: list[str], path: Path | str, title: str = "") -> Path:
    """Rows = true class, columns = predicted class, with counts in the cells."""
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.6 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                color="white" if value > matrix.max() / 2 else "black")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def threshold_curve_png(curve: pd.DataFrame, path: Path | str, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.plot(curve["false_alarm_rate"], curve["defect_recall"], "o-", markersize=3)
    for _, row in curve.iloc[::4].iterrows():
        ax.annotate(f"{row['threshold']:.2f}", (row["false_alarm_rate"], row["defect_recall"]), fontsize=7)
    ax.set_xlabel("false-alarm rate (clean images flagged)")
    ax.set_ylabel("defect recall (defect images flagged)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def real_vs_generated_png(real: np.ndarray, fake: np.ndarray, path: Path | str, title: str = "",
                          per_row: int = 8, seed: int = 0) -> Path:
    """Two rows: real patches on top, generated ones below, for people to compare."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, per_row, figsize=(per_row * 1.1, 2.6), squeeze=False)
    for row, arrays in enumerate((real, fake)):
        _show_random(axes[row], arrays, rng)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def named_rows_png(rows: dict[str, np.ndarray], path: Path | str, per_row: int = 8, title: str = "") -> Path:
    """One row per name with its first ``per_row`` images in order (rows of the same length
    line up: a generated crop above its own mask and the patch it was blended into)."""
    fig, axes = plt.subplots(len(rows), per_row, squeeze=False, figsize=(per_row * 1.1, len(rows) * 1.25))
    for r, (name, arrays) in enumerate(rows.items()):
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(arrays):
                ax.imshow(arrays[c], cmap="gray", vmin=0, vmax=255)
        axes[r][0].set_title(f"{name} ({len(arrays)})", fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def gan_comparison_png(rows: dict[str, dict[str, np.ndarray]], path: Path | str, per_group: int = 6,
                       seed: int = 0, title: str = "") -> Path:
    """One row per class, groups side by side (e.g. real | SDG-GAN | DCGAN), ``per_group``
    random patches of each, so a person can judge which generator draws the class."""
    rng = np.random.default_rng(seed)
    groups = list(next(iter(rows.values())))
    columns = len(groups) * per_group
    fig, axes = plt.subplots(len(rows), columns, squeeze=False, figsize=(columns * 0.75, len(rows) * 0.95))
    for r, (label, by_group) in enumerate(rows.items()):
        for g, group in enumerate(groups):
            row = axes[r][g * per_group:(g + 1) * per_group]
            _show_random(row, by_group.get(group, np.zeros((0, 1, 1), np.uint8)), rng, frame=True)
            row[0].set_title(f"{label}: {group}" if g == 0 else group, fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def gan_curves_png(history: list[dict], path: Path | str, title: str = "") -> Path:
    """A GAN's losses over generator steps (left) and its FID checkpoints (right)."""
    losses = [h for h in history if "generator_loss" in h]
    scores = [h for h in history if "fid" in h]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("critic_loss", "generator_loss", "wasserstein"):
        if losses and key in losses[0]:
            axes[0].plot([h["step"] for h in losses], [h[key] for h in losses], label=key.replace("_", " "))
    axes[0].set_xlabel("generator step")
    axes[0].legend(fontsize=7)
    axes[0].set_title("losses", fontsize=9)
    if scores:
        axes[1].plot([h["step"] for h in scores], [h["fid"] for h in scores], marker="o")
        best = min(scores, key=lambda h: h["fid"])
        axes[1].scatter([best["step"]], [best["fid"]], color="red", zorder=3, label=f"best {best['fid']:.2f}")
        axes[1].legend(fontsize=7)
        axes[1].set_title(f"FID ({scores[0].get('extractor', '')} features)", fontsize=9)
    else:
        axes[1].set_title("no FID checkpoints", fontsize=9)
    axes[1].set_xlabel("generator step")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def decision_heatmap_png(image: np.ndarray, defect_probability, rows: int, cols: int, path: Path | str,
                         title: str = "", deciding_patch: int | None = None) -> Path:
    """The capture as the model saw it, each patch tinted by its defect probability
    (1 - P(clean)) with the value written in it; the deciding patch is outlined."""
    from matplotlib.patches import Rectangle

    height, width = image.shape
    prob = np.asarray(defect_probability, dtype=float).reshape(rows, cols)
    scale = 7.0 / max(height, width)
    fig, ax = plt.subplots(figsize=(max(2.5, width * scale + 1.2), max(2.5, height * scale + 0.6)))
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=(0, width, height, 0))
    overlay = ax.imshow(prob, cmap="inferno", vmin=0, vmax=1, alpha=0.45, extent=(0, width, height, 0),
                        interpolation="nearest")
    ph, pw = height / rows, width / cols
    for r in range(rows):
        for c in range(cols):
            ax.text((c + 0.5) * pw, (r + 0.5) * ph, f"{prob[r, c]:.2f}", ha="center", va="center",
                    fontsize=7, color="white" if prob[r, c] < 0.6 else "black")
    if deciding_patch is not None:
        r, c = divmod(deciding_patch, cols)
        ax.add_patch(Rectangle((c * pw, r * ph), pw, ph, fill=False, edgecolor="cyan", linewidth=2))
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(overlay, ax=ax, fraction=0.05, label="defect probability")
    if title:
        ax.set_title(title, fontsize=8)
    return save_figure(fig, path, dpi=80)
