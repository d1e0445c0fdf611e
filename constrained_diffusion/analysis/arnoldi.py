"""Matrix-free Arnoldi iteration: leading eigenvalues of operators too large for a dense matrix.

After ``n`` steps from a start vector ``v0``, Arnoldi builds an orthonormal basis ``Q`` of the
Krylov space ``span{v0, A v0, ..., A^{n-1} v0}`` and the ``n x n`` upper Hessenberg matrix
``H = Q^T A Q``; the eigenvalues of ``H`` (Ritz values) approximate the extreme eigenvalues of
``A``, the largest in magnitude first (Saad, *Numerical Methods for Large Eigenvalue
Problems*). Each step costs one ``matvec`` (for a denoiser Jacobian, one JVP).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def arnoldi_eigenvalues(matvec: Callable[[Tensor], Tensor], n: int, dim: int | None = None,
                        v0: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Ritz values of ``matvec`` after ``n`` Arnoldi steps, sorted by decreasing magnitude.

    Args:
        matvec: ``v -> A v`` on flat float vectors.
        n: number of Arnoldi steps (matvecs), ``>= 1``.
        dim: length of the vectors (needed when ``v0`` is ``None``).
        v0: start vector; random normal by default.
        generator: for the random start.

    Returns:
        Complex tensor of at most ``n`` Ritz values (fewer on an early breakdown, when the
        Krylov space is invariant and the values are exact).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if v0 is None:
        if dim is None:
            raise ValueError("arnoldi_eigenvalues needs dim or v0")
        v0 = torch.randn(dim, generator=generator, dtype=torch.float64)
    q = v0.double().flatten()
    Q = [q / q.norm()]
    H = torch.zeros(n + 1, n, dtype=torch.float64)
    m = n
    for j in range(n):
        w = matvec(Q[j]).double().flatten()
        for _ in range(2):  # classical Gram-Schmidt, twice (stable re-orthogonalisation)
            coeffs = torch.stack(Q) @ w
            H[: j + 1, j] += coeffs
            w = w - torch.stack(Q).T @ coeffs
        H[j + 1, j] = w.norm()
        if float(H[j + 1, j]) < 1e-12 * float(H[: j + 1, j].norm().clamp_min(1e-300)):
            m = j + 1
            break
        Q.append(w / H[j + 1, j])
    ritz = torch.linalg.eigvals(H[:m, :m])
    return ritz[torch.argsort(ritz.abs(), descending=True)]
