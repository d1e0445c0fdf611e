"""Inpainting: keep the known pixels (or latent cells) of an image.

``A x = m * x`` (element-wise), measurements ``m * y``. For a binary mask
``e = A^T (m y - A x0) = m * (y - x0)``: the error is the difference on the known entries and
zero elsewhere; ``residual = ||m * (y - x0)||_2`` per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_diffusion._validation import check_sample_shape, check_tensor, check_unit_interval
from constrained_diffusion.constraints.base import LinearConstraint


class Inpainting(LinearConstraint):
    """Match ``y`` where ``mask`` is 1.

    Args:
        y: the image with the known values, shape ``(B, C, H, W)`` (``B = 1`` broadcasts).
            Values where the mask is 0 are ignored.
        mask: weights in ``[0, 1]`` (1 = known), broadcastable to ``y``, e.g. ``(B, 1, H, W)``.
            A mask with a larger batch than ``y`` gives one problem per mask.

    Raises:
        ValueError: ``mask`` outside ``[0, 1]`` or not broadcastable to ``y``; NaN/inf in
            either.
    """

    def __init__(self, y: Tensor, mask: Tensor) -> None:
        y = check_tensor("y", y, min_ndim=2)
        if isinstance(mask, Tensor) and not mask.is_floating_point():
            mask = mask.to(y.dtype)  # bool or integer masks
        mask = check_tensor("mask", mask, min_ndim=2)
        check_unit_interval("mask", mask)
        if mask.ndim != y.ndim:
            raise ValueError(f"mask must have {y.ndim} dimensions like y {tuple(y.shape)}, got shape {tuple(mask.shape)}")
        try:
            shape = torch.broadcast_shapes(y.shape, mask.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast against y of shape {tuple(y.shape)}") from None
        if shape[1:] != y.shape[1:]:
            raise ValueError(f"mask of shape {tuple(mask.shape)} must not be larger than y {tuple(y.shape)} outside the batch dimension")
        self.mask = mask.to(y.dtype)
        self.image = y
        super().__init__(self.mask * y)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask.to(x) * x

    def adjoint(self, v: Tensor) -> Tensor:
        return self.mask.to(v) * v

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        check_sample_shape("y", self.image, sample_shape)
        check_sample_shape("mask", self.mask, sample_shape)
        super().validate(sample_shape)
