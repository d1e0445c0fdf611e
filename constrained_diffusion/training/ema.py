"""Exponential moving average of model weights: ``ema <- decay * ema + (1 - decay) * weights``."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps a shadow copy of ``model`` whose weights follow an exponential moving average.

    Args:
        model: the model being trained.
        decay: the EMA decay (0.999 averages over roughly the last 1,000 steps).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
