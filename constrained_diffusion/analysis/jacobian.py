"""Dense denoiser Jacobians and matrix-free Jacobian products.

``J = d x0_hat / d x_t`` with ``J[i, j] = d x0_hat_i / d x_t_j``, shape ``(D, D)`` for
``D = prod(sample_shape)``. Row ``i`` is the vector-Jacobian product with the unit vector
``u_i``; `jacobian` computes ``chunk`` rows per backward pass by replicating ``x_t``
along the batch dimension (the network must treat batch elements independently, as any
eval-mode network does): the kernel is `constrained_diffusion.linalg.jacobian.dense_jacobian`,
shared with the exact Newton direction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.jacobian import dense_jacobian
from constrained_diffusion.solvers.exact_jvp import forward_jvp, math_attention

MatVec = Callable[[Tensor], Tensor]


def jacobian(denoiser: Denoiser, x_t: Tensor, t: Tensor, chunk: int = 64) -> Tensor:
    """The full Jacobian of ``x0_hat`` at one sample ``x_t`` ``(1, *sample_shape)`` or ``sample_shape``.

    Returns:
        ``(D, D)`` float64 tensor.
    """
    with math_attention():
        return dense_jacobian(lambda x: denoiser(x, t), x_t.reshape(1, *denoiser.sample_shape), chunk, denoiser.count_backward)


def jvp_matvec(denoiser: Denoiser, x_t: Tensor, t: Tensor) -> MatVec:
    """``v -> J v`` (flat vectors of length ``D``) by forward-mode AD."""
    x = x_t.reshape(1, *denoiser.sample_shape).detach()

    def matvec(v: Tensor) -> Tensor:
        _, jv = forward_jvp(denoiser, x, t, v.reshape_as(x).to(x))
        return jv.flatten().to(v.dtype)

    return matvec


def vjp_matvec(denoiser: Denoiser, x_t: Tensor, t: Tensor) -> MatVec:
    """``v -> J^T v`` (flat vectors of length ``D``) by reverse-mode AD."""
    x = x_t.reshape(1, *denoiser.sample_shape).detach()

    def matvec(v: Tensor) -> Tensor:
        with torch.enable_grad(), math_attention():
            leaf = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(denoiser(leaf, t), leaf, v.reshape_as(x).to(x))
        denoiser.count_backward()
        return g.flatten().to(v.dtype)

    return matvec


def symmetric_part(jv: MatVec, jtv: MatVec) -> MatVec:
    """``v -> (J + J^T) v / 2``."""
    return lambda v: 0.5 * (jv(v) + jtv(v))


def antisymmetric_part(jv: MatVec, jtv: MatVec) -> MatVec:
    """``v -> (J - J^T) v / 2``."""
    return lambda v: 0.5 * (jv(v) - jtv(v))


def asymmetry(J: Tensor) -> float:
    """``||J - J^T||_F / ||J||_F``: 0 for an ideal (posterior-mean) denoiser, whose J is symmetric."""
    J = J.double()
    return float(torch.linalg.matrix_norm(J - J.T) / torch.linalg.matrix_norm(J))
