r"""The SVD of a deepinv ``DecomposablePhysics`` as the library's `SpectralOperator`.

deepinv writes a decomposable linear operator as ``A x = U (m * V^T x)`` (``physics.U``,
``physics.U_adjoint``, ``physics.V``, ``physics.V_adjoint``, the singular values
``physics.mask``): ``Inpainting``, ``Denoising``, ``Decolorize``, ``CompressedSensing(fast=True)``,
``SinglePixelCamera``, ... `PhysicsSpectralOperator` exposes that as the
``constrained_diffusion.sampling.corrections.operators.SpectralOperator`` DDRM, DDNM, ΠGDM and
DiffPIR work in, so ``LinearPhysicsConstraint.svd()`` makes these methods run on deepinv's
operators (spectral tensors have the shape ``V^T`` returns, the singular values are
``|mask|`` broadcast to it, ``y_u = U^T y``).
"""

from __future__ import annotations

import deepinv
import torch
from torch import Tensor

from constrained_diffusion.sampling.corrections.operators import SpectralOperator

__all__ = ["PhysicsSpectralOperator"]


class PhysicsSpectralOperator(SpectralOperator):
    """``A = U diag(m) V^T`` of a ``deepinv.physics.DecomposablePhysics``, with ``y`` in the same units as ``A x``.

    Args:
        physics: the decomposable physics.
        y: the measurements the constraint matches (``(B|1, *m)``).

    Raises:
        TypeError: ``physics`` is not a ``DecomposablePhysics``.

    Examples:
        >>> import torch, deepinv
        >>> mask = torch.zeros(1, 4, 4); mask[:, :2] = 1
        >>> physics = deepinv.physics.Inpainting(img_size=(1, 4, 4), mask=mask)
        >>> x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> op = PhysicsSpectralOperator(physics, physics.A(x))
        >>> bool(torch.allclose(physics.A(op.project(torch.zeros_like(x))), physics.A(x)))
        True
    """

    def __init__(self, physics: deepinv.physics.DecomposablePhysics, y: Tensor) -> None:
        if not isinstance(physics, deepinv.physics.DecomposablePhysics):
            raise TypeError(f"physics must be a deepinv.physics.DecomposablePhysics (A = U diag(mask) V^T) for an SVD, "
                            f"got {type(physics).__name__}")
        self.physics = physics
        self.y = y

    def to_spectral(self, x: Tensor) -> Tensor:
        return self.physics.V_adjoint(x)

    def from_spectral(self, x_bar: Tensor) -> Tensor:
        return self.physics.V(x_bar)

    def singular_values(self, like: Tensor) -> Tensor:
        m = torch.as_tensor(self.physics.mask).abs().to(device=like.device, dtype=like.dtype)
        if m.ndim == like.ndim and m.shape[0] not in (1, like.shape[0]):
            raise ValueError(f"the physics' mask has batch {m.shape[0]} but the sample batch is {like.shape[0]}")
        return m.expand_as(like) if m.ndim <= like.ndim else m

    def measurement_u(self, r: Tensor, like: Tensor) -> Tensor:
        return self.physics.U_adjoint(r.to(like)).expand_as(like)

    def y_u(self) -> Tensor:
        return self.physics.U_adjoint(self.y)
