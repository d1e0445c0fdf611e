r"""The truncated-SVD pseudo-inverse solve ``x = J^+ b``.

With ``J = U S V^T`` and the singular values ``s_k <= rcond * s_max`` dropped,

    x = V_r S_r^-1 U_r^T b,

the minimum-norm least-squares solution of ``J x = b`` on the kept subspace (the Newton
direction ``J^-1 e`` whenever ``J`` is numerically invertible). ``rcond=None`` is the
numerical-rank cut-off ``eps * D * s_max`` of `numpy.linalg.lstsq`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pinv_solve(J: Tensor, b: Tensor, rcond: float | None = None) -> tuple[Tensor, int]:
    """``(J^+ b, rank)`` in float64 for one ``(D, D)`` matrix and a ``(D,)`` right-hand side.

    Args:
        J: ``(M, D)`` matrix.
        b: ``(M,)`` right-hand side.
        rcond: drop singular values ``<= rcond * s_max`` (``None``: ``eps * max(M, D) * s_max``).

    Returns:
        The solution ``(D,)`` float64 and the number of singular values kept.

    Examples:
        >>> J = torch.diag(torch.tensor([2.0, 1e-20], dtype=torch.float64))
        >>> x, rank = pinv_solve(J, torch.tensor([4.0, 1.0], dtype=torch.float64))
        >>> x.tolist(), rank
        ([2.0, 0.0], 1)
    """
    if J.ndim != 2 or b.ndim != 1 or J.shape[0] != b.shape[0]:
        raise ValueError(f"pinv_solve needs J (M, D) and b (M,), got {tuple(J.shape)} and {tuple(b.shape)}")
    J, b = J.double(), b.double()
    U, S, Vh = torch.linalg.svd(J, full_matrices=False)
    cut = rcond if rcond is not None else torch.finfo(torch.float64).eps * max(J.shape)
    kept = S > cut * S[0]
    coeff = torch.where(kept, (U.T @ b) / torch.where(kept, S, torch.ones_like(S)), torch.zeros_like(S))
    return Vh.T @ coeff, int(kept.sum())
