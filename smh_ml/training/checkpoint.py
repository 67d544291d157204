"""A trained classifier's folder: ``model.pt`` and ``report.json``, one writer and one reader."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from smh_ml.io import atomic_dir
from smh_ml.training.loop import state_dict_cpu


def save_classifier(out: Path | str, model: torch.nn.Module, report: dict) -> Path:
    """``model.pt`` (state dict) + ``report.json``, replacing the folder whole (atomically):
    the one writer of every trained classifier's folder."""
    with atomic_dir(Path(out)) as tmp:
        torch.save(state_dict_cpu(model), tmp / "model.pt")
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return Path(out)


def load_classifier(folder: Path | str) -> tuple[torch.nn.Module, dict]:
    """A trained classifier from a :func:`save_classifier` folder, with its report (a dict)."""
    from smh_ml.models import build

    folder = Path(folder)
    report = json.loads((folder / "report.json").read_text())
    model = build(report["arch"], len(report["classes"]), report["geometry"]["patch"], pretrained=False,
                  flip_average=report.get("train", {}).get("flip_average", False))
    if (report.get("decision") or {}).get("unknown_score") == "feature_distance":
        from smh_ml.models.feature_distance import MAX_DIMENSIONS, FeatureDistance

        model = FeatureDistance(model, len(report["classes"]), MAX_DIMENSIONS, side=report["geometry"]["patch"])
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    return model.eval(), report
