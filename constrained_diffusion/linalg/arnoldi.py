r"""Batched, matrix-free Arnoldi iteration and classical Gram-Schmidt.

After ``n`` steps from a start vector ``q_0``, Arnoldi builds an orthonormal basis
``Q_n = [q_0 .. q_{n-1}]`` of the Krylov space ``span{q_0, A q_0, ..., A^{n-1} q_0}`` and the
``(n+1) x n`` upper Hessenberg matrix ``H`` with ``A Q_n = Q_{n+1} H``. The eigenvalues of its
leading ``n x n`` block (Ritz values) approximate the extreme eigenvalues of ``A``, the largest
in magnitude first (Saad, *Numerical Methods for Large Eigenvalue Problems*). Each step costs
one ``matvec``; for a denoiser Jacobian, one JVP.

Batched: sample ``i`` of a ``(B, *shape)`` batch runs its own Arnoldi process on its own
operator ``A_i`` through one batched ``matvec`` per step. A sample whose Krylov space becomes
invariant ("breakdown") stops there, its Ritz values exact, and continues with zero vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def gram_schmidt(basis: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Orthogonalise ``w`` against an orthonormal ``basis``: classical Gram-Schmidt, twice.

    "Twice is enough" (Giraud et al., 2005): two classical passes are as stable as modified
    Gram-Schmidt and stay batched.

    Args:
        basis: ``(B, k, D)``, orthonormal rows per sample.
        w: ``(B, D)``.

    Returns:
        ``(h, w_perp)``: the coefficients ``(B, k)`` (both passes summed) and ``w`` minus its
        projection, ``(B, D)``.
    """
    h = torch.einsum("bkd,bd->bk", basis, w)
    w = w - torch.einsum("bkd,bk->bd", basis, h)
    h2 = torch.einsum("bkd,bd->bk", basis, w)
    w = w - torch.einsum("bkd,bk->bd", basis, h2)
    return h + h2, w


@dataclass(frozen=True)
class ArnoldiResult:
    """The Hessenberg matrices of a batched Arnoldi run.

    Attributes:
        hessenberg: ``(B, n + 1, n)`` float64 on the CPU.
        size: ``(B,)`` long: the size ``m_i <= n`` of each sample's valid leading block (smaller
            than ``n`` after a breakdown).
    """

    hessenberg: Tensor
    size: Tensor

    def ritz_values(self, i: int) -> Tensor:
        """Complex Ritz values of sample ``i``, sorted by decreasing magnitude."""
        m = int(self.size[i])
        ritz = torch.linalg.eigvals(self.hessenberg[i, :m, :m])
        return ritz[torch.argsort(ritz.abs(), descending=True)]


def arnoldi(matvec: Callable[[Tensor], Tensor], start: Tensor, n: int) -> ArnoldiResult:
    """``n`` Arnoldi steps per sample from ``start``, in float64.

    Args:
        matvec: ``V -> A V`` on ``(B, *shape)`` tensors (sample ``i`` by its own ``A_i``), called
            once per step with vectors of ``start``'s dtype and device.
        start: start vectors ``(B, *shape)``, nonzero.
        n: Arnoldi steps (``>= 1``).

    Returns:
        An `ArnoldiResult`.

    Examples:
        >>> A = torch.diag(torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64))
        >>> res = arnoldi(lambda v: v @ A.T, torch.ones(1, 3, dtype=torch.float64), n=3)
        >>> ritz = [round(float(r.real), 6) for r in res.ritz_values(0)]
        >>> ritz
        [3.0, -2.0, 1.0]
    """
    if n < 1:
        raise ValueError(f"the number of Arnoldi iterations must be >= 1, got {n}")
    B = start.shape[0]
    q = start.detach().flatten(1).double()
    Q = [q / q.norm(dim=1, keepdim=True).clamp_min(1e-300)]
    H = torch.zeros(B, n + 1, n, dtype=torch.float64)
    size = torch.full((B,), n, dtype=torch.long)
    alive = torch.ones(B, dtype=torch.bool)
    for j in range(n):
        w = matvec(Q[j].reshape(start.shape).to(start)).detach().flatten(1).double()
        coeffs, w = gram_schmidt(torch.stack(Q, dim=1), w)
        H[:, : j + 1, j] = coeffs.cpu()
        norm = w.norm(dim=1)
        H[:, j + 1, j] = norm.cpu()
        broke = alive & (norm.cpu() < 1e-12 * H[:, : j + 1, j].norm(dim=1).clamp_min(1e-300))
        size[broke] = j + 1
        alive &= ~broke
        if not bool(alive.any()):
            break
        keep = alive.to(w.device).unsqueeze(1)  # a finished sample continues with zeros
        Q.append(torch.where(keep, w / norm.clamp_min(1e-300).unsqueeze(1), torch.zeros_like(w)))
    return ArnoldiResult(hessenberg=H, size=size)


def largest_eigenvalue(matvec: Callable[[Tensor], Tensor], start: Tensor, n: int) -> Tensor:
    """Per-sample largest ``|eigenvalue|`` of a batched operator by ``n`` Arnoldi steps.

    Args:
        matvec: ``V -> A V`` on ``(B, *shape)`` tensors (see `arnoldi`).
        start: start vectors ``(B, *shape)``, nonzero.
        n: Arnoldi steps (``>= 1``).

    Returns:
        ``(B,)`` float64: the largest magnitude among each sample's Ritz values (exact when the
        Krylov space became invariant earlier).

    Examples:
        >>> A = torch.tensor([[2.0, 1.0], [0.0, -4.0]], dtype=torch.float64)
        >>> largest_eigenvalue(lambda v: v @ A.T, torch.ones(1, 2, dtype=torch.float64), n=2).tolist()
        [4.0]
    """
    res = arnoldi(matvec, start, n)
    return torch.stack([res.ritz_values(b).abs().max() for b in range(start.shape[0])])
