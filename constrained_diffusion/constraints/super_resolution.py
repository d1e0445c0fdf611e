"""Super-resolution: the sample, down-sampled by ``factor``, must equal a low-resolution image.

The down-sampler is separable, ``A x = M_h x M_w^T`` per channel, with ``M`` a
``(n, n * factor)`` matrix of filter taps, so the exact adjoint is
``A^T v = M_h^T v M_w``. Two kernels:

* ``"bicubic"`` — antialiased bicubic (Keys, ``a = -0.5``) stretched by ``factor``: output
  ``i`` is centred at input coordinate ``(i + 0.5) f - 0.5`` with taps
  ``w_j = cubic((j - c) / f)`` over ``|j - c| < 2 f``, taps outside the image dropped and
  the rest normalised to sum to 1 (PIL's and ``torch.nn.functional.interpolate(...,
  antialias=True)``'s convention);
* ``"box"`` — the mean of each ``f x f`` block.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from constrained_diffusion._validation import check_tensor
from constrained_diffusion.constraints.base import LinearConstraint

Kernel = Literal["bicubic", "box"]


def _cubic(x: Tensor, a: float = -0.5) -> Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def downsample_matrix(size: int, factor: int, kernel: Kernel = "bicubic") -> Tensor:
    """The ``(size // factor, size)`` matrix of the 1-D down-sampler (float64)."""
    if size % factor:
        raise ValueError(f"factor={factor} does not divide size {size}")
    n = size // factor
    if kernel == "box":
        return torch.kron(torch.eye(n, dtype=torch.float64), torch.full((1, factor), 1.0 / factor, dtype=torch.float64))
    if kernel != "bicubic":
        raise ValueError(f"kernel must be 'bicubic' or 'box', got {kernel!r}")
    centers = (torch.arange(n, dtype=torch.float64) + 0.5) * factor - 0.5
    j = torch.arange(size, dtype=torch.float64)
    w = _cubic((j[None, :] - centers[:, None]) / factor)
    return w / w.sum(dim=1, keepdim=True)


class SuperResolution(LinearConstraint):
    """Down-sampling by an integer ``factor`` must reproduce ``y``.

    Args:
        y: low-resolution images, shape ``(B, C, h, w)``; samples are ``(C, h f, w f)``.
        factor: integer down-sampling factor ``f >= 1``.
        kernel: ``"bicubic"`` (antialiased) or ``"box"``.
        noise_std: ``sigma_y`` of the noise in ``y`` (a number or ``(B,)``, ``>= 0``, in the
            data's units); ``None`` when unknown. Every low-resolution pixel is a measurement:
            ``m = C h w`` (`LinearConstraint.num_measurements`).

    Raises:
        ValueError: a non-integer or non-positive ``factor``; an unknown ``kernel``; NaN/inf in
            ``y``; an invalid ``noise_std``; at sampling time, a ``factor`` that does not divide
            the sample size.
    """

    def __init__(self, y: Tensor, factor: int, kernel: Kernel = "bicubic", noise_std: float | Tensor | None = None) -> None:
        y = check_tensor("y", y, min_ndim=4)
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        if kernel not in ("bicubic", "box"):
            raise ValueError(f"kernel must be 'bicubic' or 'box', got {kernel!r}")
        super().__init__(y, noise_std=noise_std)
        self.factor = factor
        self.kernel: Kernel = kernel
        h, w = y.shape[-2:]
        self._mh = downsample_matrix(h * factor, factor, kernel).to(y.dtype)
        self._mw = downsample_matrix(w * factor, factor, kernel).to(y.dtype)
        self.input_shape = (y.shape[-3], h * factor, w * factor)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self._mh.shape[1], self._mw.shape[1]):
            raise ValueError(f"expected samples of spatial size {(self._mh.shape[1], self._mw.shape[1])}, got {tuple(x.shape[-2:])}")
        return torch.einsum("ih,...hw,jw->...ij", self._mh.to(x), x, self._mw.to(x))

    def adjoint(self, v: Tensor) -> Tensor:
        return torch.einsum("ih,...ij,jw->...hw", self._mh.to(v), v, self._mw.to(v))

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        H, W = sample_shape[-2:]
        if H % self.factor or W % self.factor:
            raise ValueError(f"factor={self.factor} does not divide the sample size {(H, W)}")
        expected = (sample_shape[0], H // self.factor, W // self.factor)
        if tuple(self.y.shape[1:]) != expected:
            raise ValueError(
                f"y has shape {tuple(self.y.shape)} but samples of shape {tuple(sample_shape)} down-sampled "
                f"by factor={self.factor} have shape (B, {', '.join(map(str, expected))})"
            )
        self.input_shape = tuple(sample_shape)

    def __repr__(self) -> str:
        return f"SuperResolution(factor={self.factor}, kernel={self.kernel!r}, y={tuple(self.y.shape)})"


__all__ = ["SuperResolution", "downsample_matrix"]
