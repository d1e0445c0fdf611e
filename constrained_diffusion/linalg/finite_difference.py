r"""The finite-difference Jacobian-vector product with a max-norm step.

For a function ``f`` with Jacobian ``J`` at ``x`` (batched: sample ``i`` has its own ``J_i``)

    J v ~= (f(x + h' v) - f(x)) / h',        h' = h / ||v_i||_inf   (per sample),

so the perturbation ``h' v`` has max-norm exactly ``h`` whatever the scale of ``v``. A zero
``v_i`` gives ``J_i v_i = 0`` without dividing by zero. The error of the quotient is
``O(h |f''|)`` from truncation plus ``O(eps |f(x)| / h')`` from rounding in the arithmetic of
``f`` (unit roundoff ``eps``); the paper's ``h = 0.005`` is right for float32.

This is the one copy of the kernel: `InexactNewton`, `ExactNewton` (finite-difference GMRES),
the ``"arnoldi"`` step-size rule and `EncodedConstraint` ("VAE Newton") all call `fd_jvp`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from constrained_diffusion.linalg.reductions import max_abs


def fd_step(v: Tensor, h: float) -> tuple[Tensor, Tensor]:
    """``(h', active)``: the per-sample step ``h / ||v_i||_inf`` (0 where ``v_i = 0``) and ``v_i != 0``.

    Both have shape ``(B, 1, ..., 1)``.
    """
    scale = max_abs(v)
    active = scale > 0
    h_prime = torch.where(active, h / scale.clamp_min(torch.finfo(scale.dtype).tiny), torch.zeros_like(scale))
    return h_prime, active


@torch.no_grad()
def fd_jvp(f: Callable[[Tensor], Tensor], x: Tensor, v: Tensor, h: float, fx: Tensor | None = None) -> Tensor:
    """``J v`` by a forward difference of ``f`` at ``x`` along ``v``, per sample.

    Args:
        f: the batched function, ``(B, *shape) -> (B, *out_shape)``.
        x: the point, ``(B, *shape)``.
        v: the direction, shape of ``x`` (any floating dtype; the result has ``v``'s dtype).
        h: max-norm of the perturbation ``h' v`` (``> 0``).
        fx: ``f(x)`` if already evaluated (reused: one call of ``f``); when ``None`` the two
            points are evaluated in one batched call ``f(cat([x, x + h' v]))``.

    Returns:
        ``J v``, shape ``(B, *out_shape)``, zero for the samples where ``v`` is zero.

    Example:
        >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
        >>> f = lambda x: x @ A.T
        >>> v = torch.tensor([[1.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
        >>> fd_jvp(f, torch.zeros(2, 2, dtype=torch.float64), v, h=1e-3).tolist()
        [[1.0, -3.0], [0.0, 0.0]]
    """
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h!r}")
    if tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"v has shape {tuple(v.shape)} but x has shape {tuple(x.shape)}")
    h_prime, active = fd_step(v, h)
    moved_in = (x + h_prime * v).to(x.dtype)
    if fx is None:
        fx, moved = f(torch.cat([x, moved_in])).chunk(2)
    else:
        moved = f(moved_in)
    out_active = active.reshape(-1, *([1] * (moved.ndim - 1)))
    denom = torch.where(out_active, h_prime.reshape(out_active.shape), torch.ones_like(h_prime.reshape(out_active.shape)))
    jv = (moved - fx).to(v.dtype) / denom
    return torch.where(out_active, jv, torch.zeros_like(jv))
