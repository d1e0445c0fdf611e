"""Inpainting: keep the known pixels (or latent cells) of an image.

``A x = m * x`` (element-wise), measurements ``m * y``. For a binary mask
``e = A^T (m y - A x0) = m * (y - x0)``: the error is the difference on the known entries and
zero elsewhere; ``residual = ||m * (y - x0)||_2`` per sample.

With noisy known pixels ``y = x + n``, ``n ~ N(0, sigma_y^2)`` (``noise_std``), the residual of
the truth has ``E ||m * n||^2 = sigma_y^2 sum_j m_j^2``: the number of measurements is
``m = sum_j m_j^2`` over one sample's entries (the count of known entries for a binary mask,
broadcast over the channels), not the size of ``y``.
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
        noise_std: ``sigma_y`` of the noise in the known values (a number or ``(B,)``, ``>= 0``,
            in the data's units); ``None`` when unknown. See `LinearConstraint`.

    Raises:
        ValueError: ``mask`` outside ``[0, 1]`` or not broadcastable to ``y``; NaN/inf in
            either; an invalid ``noise_std``.

    Examples:
        >>> mask = torch.zeros(1, 1, 4, 4); mask[..., 2:, :] = 1      # the bottom half is known
        >>> c = Inpainting(torch.zeros(1, 3, 4, 4), mask, noise_std=0.1)
        >>> c.num_measurements                                        # 8 known pixels x 3 channels
        tensor([24.])
        >>> level = c.discrepancy(tau=1.0)                            # 0.1 * sqrt(24)
        >>> round(float(level), 4)
        0.4899
    """

    def __init__(self, y: Tensor, mask: Tensor, noise_std: float | Tensor | None = None) -> None:
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
        super().__init__(self.mask * y, noise_std=noise_std)

    @property
    def num_measurements(self) -> Tensor:
        """``m = sum_j mask_j^2`` over one sample (the known entries of a binary mask), ``(1,)`` or ``(B,)``."""
        mask = self.mask.expand(self.mask.shape[0], *self.y.shape[1:])
        return mask.float().pow(2).flatten(1).sum(dim=1).cpu()

    def forward(self, x: Tensor) -> Tensor:
        return self.mask.to(x) * x

    def adjoint(self, v: Tensor) -> Tensor:
        return self.mask.to(v) * v

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        check_sample_shape("y", self.image, sample_shape)
        check_sample_shape("mask", self.mask, sample_shape)
        super().validate(sample_shape)
