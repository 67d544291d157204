"""Test-time flip averaging, as part of the model.

In evaluation mode the wrapped classifier sees the input as it is and flipped left-right,
top-bottom and both, and answers the mean of the four logit vectors; in training mode it is
the plain classifier. Because the averaging is inside the module, the best-checkpoint choice,
the calibrated threshold, the test report and the exported ONNX graph all score the same
function, and the deploy path needs no change. It costs four forward passes per input.
On a whole-capture EfficientNet-Lite0 of magnetic tile it lifted the validation captures'
arg-max accuracy from 95.0% to 97.5% (docs/RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import nn


class FlipAverage(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.model(x)
        views = (x, x.flip(-1), x.flip(-2), x.flip(-2, -1))
        return torch.stack([self.model(v) for v in views]).mean(dim=0)
