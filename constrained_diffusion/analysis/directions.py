"""For a single-pixel error ``e``: the maps ``Je``, ``J^+ e``, ``J^T e`` and one step along each.

``J = d x0_hat / d x_t`` (dense) at a noised test digit. Each direction is a candidate for the
correction of ``x_t`` that moves ``x0_hat`` by ``e``: the Newton direction ``J^+ e``
(pseudo-inverse, cut-off ``rcond``), the inexact-Newton direction ``Je`` and the
gradient-descent direction ``J^T e``. One step of max-norm ``step_scale`` along each shows what it does
to ``x0_hat`` (used by ``constrained-diffusion analyze directions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_diffusion.analysis.jacobian import jacobian
from constrained_diffusion.denoisers import Denoiser
from constrained_diffusion.utils.renamed import deprecated


@dataclass
class PixelDirections:
    """The error, the three directions (flat, float64) and ``x0_hat`` before and after one step along each.

    Attributes:
        error: the single-pixel error ``e`` ``(D,)``.
        directions: ``"Je"``, ``"J+e"`` and ``"JTe"``, each ``(D,)``.
        x0_before: ``x0_hat(x_t)`` ``(1, C, H, W)``.
        x0_after: per direction, ``x0_hat(x_t + step)`` with ``step`` of max-norm ``step_scale``.
    """

    error: Tensor
    directions: dict[str, Tensor]
    x0_before: Tensor
    x0_after: dict[str, Tensor]


def pixel_directions(model: Denoiser, x0: Tensor, t: int, pixel: tuple[int, int], step_scale: float = 0.5,
                     rcond: float = 1e-3, seed: int = 0, *, lr: float | None = None) -> PixelDirections:
    """Noise ``x0`` ``(1, C, H, W)`` to time ``t`` (seeded), then compare the directions for ``e`` at ``pixel``.

    ``step_scale`` is the max-norm of the one step along each direction (``lr`` before 0.2: the
    old keyword still works, with a `DeprecationWarning`).

    Raises:
        ValueError: ``pixel`` (row, column) lies outside the image.
    """
    if lr is not None:
        deprecated("lr", "step_scale", "pixel_directions: ")
        step_scale = lr
    H, W = model.sample_shape[-2:]
    row, col = pixel
    if not (0 <= row < H and 0 <= col < W):
        raise ValueError(f"--pixel must lie inside the {H}x{W} image")
    tt = torch.tensor(t)
    alpha, sigma = (float(v) for v in model.alpha_sigma(tt))
    x_t = alpha * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    J = jacobian(model, x_t, tt)
    e = torch.zeros(J.shape[0], dtype=torch.float64)
    e[row * W + col] = 1.0
    U, S, Vh = torch.linalg.svd(J)
    keep = S > rcond * S[0]
    directions = {"Je": J @ e, "J+e": Vh[keep].T @ ((U[:, keep].T @ e) / S[keep]), "JTe": J.T @ e}
    with torch.no_grad():
        before = model(x_t, tt)
        after = {name: model(x_t + (step_scale * d / d.abs().max()).reshape(x_t.shape).float(), tt) for name, d in directions.items()}
    return PixelDirections(e, directions, before, after)


def directions_grid(result: PixelDirections, shape: tuple[int, ...], scale: int = 4) -> Tensor:
    """The figure as one image grid: top row ``e, Je, J+e, JTe`` (each scaled to max ``|.| = 1``),
    bottom row ``x0_hat`` before and after one step along each; pixels repeated ``scale`` times."""
    from constrained_diffusion.utils.images import make_grid

    maps = [result.error, *result.directions.values()]
    H, W = shape[-2:]
    maps_img = torch.stack([m.reshape(1, H, W).float() / m.abs().max().clamp_min(1e-12) for m in maps])
    recon = torch.cat([result.x0_before, *result.x0_after.values()])
    return make_grid(torch.cat([maps_img, recon]).repeat_interleave(scale, -1).repeat_interleave(scale, -2), nrow=4)
