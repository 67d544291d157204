"""Pictures for people: sample grids of patches per class."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from smh_ml.io import atomic_write_bytes  # noqa: E402


def sample_grid(arrays: np.ndarray, labels: pd.Series, path: Path | str, per_class: int = 8,
                seed: int = 0, title: str = "") -> Path:
    """Save a PNG with one row of up to ``per_class`` random samples for each class."""
    import io

    classes = sorted(labels.unique())
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(classes), per_class, squeeze=False,
                             figsize=(per_class * 1.2, len(classes) * 1.3))
    for r, label in enumerate(classes):
        rows = np.flatnonzero(labels.to_numpy() == label)
        picks = rng.choice(rows, min(per_class, len(rows)), replace=False) if len(rows) else []
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(picks):
                ax.imshow(arrays[picks[c]], cmap="gray", vmin=0, vmax=255)
        axes[r][0].set_title(f"{label} ({len(rows)})", fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
