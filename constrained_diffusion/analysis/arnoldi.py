"""Matrix-free Arnoldi iteration: leading eigenvalues of operators too large for a dense matrix.

After ``n`` steps from a start vector ``v0``, Arnoldi builds an orthonormal basis ``Q`` of the
Krylov space ``span{v0, A v0, ..., A^{n-1} v0}`` and the ``n x n`` upper Hessenberg matrix
``H = Q^T A Q``; the eigenvalues of ``H`` (Ritz values) approximate the extreme eigenvalues of
``A``, the largest in magnitude first (Saad, *Numerical Methods for Large Eigenvalue
Problems*). Each step costs one ``matvec`` (for a denoiser Jacobian, one JVP).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from constrained_diffusion.linalg.arnoldi import arnoldi


def arnoldi_eigenvalues(matvec: Callable[[Tensor], Tensor], n: int, dim: int | None = None,
                        v0: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Ritz values of ``matvec`` after ``n`` Arnoldi steps, sorted by decreasing magnitude.

    A single-vector front end of `constrained_diffusion.linalg.arnoldi`.

    Args:
        matvec: ``v -> A v`` on flat float vectors ``(D,)``.
        n: number of Arnoldi steps (matvecs), ``>= 1``.
        dim: length of the vectors (needed when ``v0`` is ``None``).
        v0: start vector; random normal by default.
        generator: for the random start; ``None`` draws from torch's global random state.

    Returns:
        Complex tensor of at most ``n`` Ritz values (fewer on an early breakdown, when the
        Krylov space is invariant and the values are exact).

    Examples:
        >>> A = torch.diag(torch.tensor([1.0, -5.0, 2.0], dtype=torch.float64))
        >>> ritz = [round(v.real.item(), 6) for v in arnoldi_eigenvalues(lambda v: A @ v, n=3, v0=torch.ones(3))]
        >>> ritz
        [-5.0, 2.0, 1.0]
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if v0 is None:
        if dim is None:
            raise ValueError("arnoldi_eigenvalues needs dim or v0")
        v0 = torch.randn(dim, generator=generator, dtype=torch.float64)
    start = v0.double().flatten().unsqueeze(0)
    result = arnoldi(lambda V: matvec(V[0]).double().flatten().unsqueeze(0), start, n)
    return result.ritz_values(0)
