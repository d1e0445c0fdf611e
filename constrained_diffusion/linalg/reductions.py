"""Per-sample reductions and broadcasting: every norm and step size of a batch is per sample.

A batch ``x`` of shape ``(B, *shape)`` is ``B`` independent problems, so the reductions here
flatten all but the first dimension and return one value per sample, either as ``(B,)`` or
reshaped to ``(B, 1, ..., 1)`` so that it broadcasts against ``x``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def per_sample(v: Tensor, ndim: int) -> Tensor:
    """A ``(B,)`` tensor reshaped to ``(B, 1, ..., 1)`` with ``ndim`` dimensions.

    Examples:
        >>> per_sample(torch.tensor([1.0, 2.0]), 4).shape
        torch.Size([2, 1, 1, 1])
    """
    return v.reshape(-1, *([1] * (ndim - 1)))


def max_abs(x: Tensor) -> Tensor:
    """Per-sample ``||x_i||_inf``, shape ``(B, 1, ..., 1)`` (broadcastable against ``x``).

    Examples:
        >>> max_abs(torch.tensor([[1.0, -3.0], [0.5, 0.25]])).flatten().tolist()
        [3.0, 0.5]
    """
    return per_sample(x.detach().flatten(1).abs().amax(dim=1), x.ndim)


def safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else ``0``: a zero norm or residual means "no step".

    Examples:
        >>> safe_ratio(torch.tensor([1.0, 1.0]), torch.tensor([4.0, 0.0])).tolist()
        [0.25, 0.0]
    """
    ok = den > 0
    return torch.where(ok, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))
