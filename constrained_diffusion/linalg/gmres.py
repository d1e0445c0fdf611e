r"""Batched, matrix-free GMRES (Saad & Schultz, SIAM J. Sci. Stat. Comput. 7, 1986).

Solves ``A x = b`` for each sample of a batch, touching ``A`` only through products
``A v``. From ``x_0 = 0``, iteration ``k`` takes the ``x`` in the Krylov space
``K_k = span{b, A b, ..., A^{k-1} b}`` that minimises ``||b - A x||``: the Arnoldi process
builds an orthonormal basis ``V_k`` of ``K_k`` (first vector ``b / ||b||``) and the Hessenberg
matrix ``H_k`` with ``A V_k = V_{k+1} H_k``; then ``x = V_k y`` with
``y = argmin ||beta e_1 - H_k y||``, ``beta = ||b||``. The small least-squares problem is kept
in QR form by Givens rotations, which give the residual after every iteration for free.

Each sample stops — its ``x`` frozen — at its own iteration (relative residual ``<= tol``, or
an invariant Krylov space: "happy breakdown", where the solution is exact), so a batch equals
its samples solved one at a time; the loop ends when every sample has stopped or after
``iterations`` steps (capped at the dimension ``D``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_diffusion.linalg.arnoldi import gram_schmidt


@dataclass(frozen=True)
class GMRESResult:
    """The solution and, per sample, how it was reached.

    Attributes:
        x: ``(B, D)`` solution, in the working dtype (float32 or wider).
        residual: ``(B,)`` float64 on the CPU: ``||b - A x|| / ||b||`` (0 where ``b = 0``).
        iterations: ``(B,)`` long on the CPU: Krylov vectors that ``x`` uses.
        converged: ``(B,)`` bool on the CPU: ``residual <= tol``, a breakdown, or ``b = 0``.
    """

    x: Tensor
    residual: Tensor
    iterations: Tensor
    converged: Tensor


class _Givens:
    """The QR factorisation of the batched Hessenberg matrix, one Givens rotation per column."""

    def __init__(self, beta: Tensor, k: int) -> None:
        B = beta.shape[0]
        self.R = beta.new_zeros(B, k, k)
        self.g = beta.new_zeros(B, k + 1)
        self.g[:, 0] = beta
        self.cs, self.sn = beta.new_zeros(B, k), beta.new_zeros(B, k)

    def add_column(self, j: int, h: Tensor, h_next: Tensor, update: Tensor) -> Tensor:
        """Rotate column ``j`` (``h`` of shape ``(B, j+1)``, subdiagonal ``h_next``) for the samples in
        ``update``; returns ``ok``, false where ``J`` is singular on the Krylov space."""
        col = list(h.unbind(1))
        for i in range(j):  # the previous rotations
            a, b = col[i], col[i + 1]
            col[i], col[i + 1] = self.cs[:, i] * a + self.sn[:, i] * b, -self.sn[:, i] * a + self.cs[:, i] * b
        a = col[j]
        r = torch.hypot(a, h_next)
        ok = r > 0
        safe_r = torch.where(ok, r, torch.ones_like(r))
        c = torch.where(ok, a / safe_r, torch.ones_like(r))
        s = torch.where(ok, h_next / safe_r, torch.zeros_like(r))
        col[j] = r
        upd = update & ok
        self.R[:, : j + 1, j] = torch.where(upd[:, None], torch.stack(col, dim=1), self.R[:, : j + 1, j])
        self.cs[:, j] = torch.where(upd, c, self.cs[:, j])
        self.sn[:, j] = torch.where(upd, s, self.sn[:, j])
        g_j = self.g[:, j].clone()
        self.g[:, j] = torch.where(upd, c * g_j, self.g[:, j])
        self.g[:, j + 1] = torch.where(upd, -s * g_j, self.g[:, j + 1])
        return ok

    def solve(self, used: Tensor) -> Tensor:
        """``y = R^-1 g`` on each sample's leading ``used`` block (zeros beyond it), ``(B, k)``."""
        B, k = self.R.shape[0], self.R.shape[1]
        idx = torch.arange(k, device=used.device)
        keep = idx[None, :] < used[:, None]
        eye = torch.eye(k, dtype=self.R.dtype, device=self.R.device).expand(B, k, k)
        R_used = torch.where(keep[:, :, None] & keep[:, None, :], self.R, eye)
        rhs = torch.where(keep, self.g[:, :k], torch.zeros_like(self.g[:, :k]))[..., None]
        return torch.linalg.solve_triangular(R_used, rhs, upper=True).squeeze(-1)


@torch.no_grad()
def gmres(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int, tol: float = 0.0) -> GMRESResult:
    """Solve ``A x = b`` per sample by at most ``iterations`` GMRES steps.

    Args:
        matvec: ``V -> A V`` on ``(B, D)`` tensors of the working dtype (rows of finished
            samples are zero; their products are ignored).
        b: ``(B, D)`` right-hand sides (promoted to at least float32).
        iterations: Krylov dimension ``k`` (``>= 1``; capped at ``D``).
        tol: stop a sample once ``||b - A x|| / ||b|| <= tol`` (``0``: run every iteration).

    Returns:
        A `GMRESResult`.

    Examples:
        >>> A = torch.tensor([[4.0, 1.0], [2.0, 3.0]], dtype=torch.float64)
        >>> res = gmres(lambda V: V @ A.T, torch.tensor([[1.0, 2.0]], dtype=torch.float64), iterations=2)
        >>> [round(v, 6) for v in res.x[0].tolist()], bool(res.converged[0])
        ([0.1, 0.6], True)
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    work = torch.promote_types(b.dtype, torch.float32)
    r0 = b.to(work)
    B, D = r0.shape
    k = min(iterations, D)
    eps, tiny = torch.finfo(work).eps, torch.finfo(work).tiny
    beta = r0.norm(dim=1)
    active = beta > 0
    converged = ~active                                  # b = 0: x = 0 is exact
    safe_beta = torch.where(active, beta, torch.ones_like(beta))
    V = r0.new_zeros(B, k + 1, D)
    V[:, 0] = torch.where(active[:, None], r0 / safe_beta[:, None], torch.zeros_like(r0))
    qr = _Givens(beta, k)
    used = torch.zeros(B, dtype=torch.long, device=r0.device)
    residual = active.to(work)
    for j in range(k):
        if not bool(active.any()):
            break
        w = matvec(V[:, j]).reshape(B, -1).to(work)
        w = torch.where(active[:, None], w, torch.zeros_like(w))
        w_norm = w.norm(dim=1)
        h, w = gram_schmidt(V[:, : j + 1], w)
        h_next = w.norm(dim=1)
        breakdown = h_next <= 4 * eps * math.sqrt(j + 1) * w_norm
        V[:, j + 1] = torch.where((active & ~breakdown)[:, None], w / h_next.clamp_min(tiny)[:, None], torch.zeros_like(w))
        h_next = torch.where(breakdown, torch.zeros_like(h_next), h_next)
        ok = qr.add_column(j, h, h_next, active)
        update = active & ok
        used = used + update.long()
        residual = torch.where(update, qr.g[:, j + 1].abs() / safe_beta, residual)
        done = update & ((residual <= tol) | breakdown)
        converged = converged | done
        active = active & ~done & ok
    x = torch.einsum("bi,bid->bd", qr.solve(used), V[:, :k])
    return GMRESResult(x=x, residual=residual.double().cpu(), iterations=used.cpu(), converged=converged.cpu())
