"""Do ``J`` and ``J^-1`` share their leading eigenvectors? The paper's MNIST experiment, made explicit.

Graikos et al. (NeurIPS 2025, rebuttal) motivate ``J e`` as a stand-in for ``J^-1 e`` by
comparing the top-20 eigenvectors of ``J`` with those of ``J^-1``. A matrix and its inverse
have the *same* eigenvectors (with reciprocal eigenvalues), so the result depends on which
eigenvectors are paired: ``J``'s top-k (largest ``|lambda|``) correspond to ``J^-1``'s
*bottom*-k. `eigenvector_similarity` therefore reports both pairings:
``pool="top-k"`` (closest among ``J_other^-1``'s top-k, the rebuttal's reading) and
``pool="all"`` (closest among all of them, which for ``J_other = J`` is 1 up to conditioning).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from constrained_diffusion.linalg.pinv import pinv_solve

Pool = Literal["top-k", "all"]


def _sorted_real_eigenvectors(M: Tensor) -> Tensor:
    """Real parts of the eigenvectors of ``M``, unit-normalised, ordered by ``|eigenvalue|`` descending."""
    values, vectors = torch.linalg.eig(M)
    order = torch.argsort(values.abs(), descending=True)
    V = vectors[:, order].real
    return V / V.norm(dim=0, keepdim=True).clamp_min(1e-300)


def eigenvector_similarity(J: Tensor, J_other: Tensor, k: int = 20, pool: Pool = "top-k") -> float:
    """Mean ``|cosine|`` between ``J``'s top-k eigenvectors and their closest eigenvectors of ``J_other^-1``.

    Args:
        J: ``(D, D)``.
        J_other: ``(D, D)``; ``J`` itself for "same", another image's ``J`` for the baseline.
        k: how many of ``J``'s leading eigenvectors to match.
        pool: match among ``J_other^-1``'s top-k (``"top-k"``) or among all its eigenvectors.
    """
    if J.shape != J_other.shape or J.ndim != 2 or J.shape[0] != J.shape[1]:
        raise ValueError(f"J and J_other must be square and of one shape, got {tuple(J.shape)} and {tuple(J_other.shape)}")
    if not 1 <= k <= J.shape[0]:
        raise ValueError(f"k must lie in [1, {J.shape[0]}], got {k}")
    if pool not in ("top-k", "all"):
        raise ValueError(f"pool must be 'top-k' or 'all', got {pool!r}")
    V = _sorted_real_eigenvectors(J.double())[:, :k]
    W = _sorted_real_eigenvectors(torch.linalg.inv(J_other.double()))
    if pool == "top-k":
        W = W[:, :k]
    return float((V.T @ W).abs().amax(dim=1).mean())


def direction_alignment(J: Tensor, e: Tensor, rcond: float = 1e-3) -> dict[str, float]:
    """How well ``J e``, ``J^T e`` and ``e`` stand in for the regularised Newton direction ``J^+ e``.

    The Newton direction is the least-squares solution ``n = argmin ||J n - e||`` with singular
    values below ``rcond * s_max`` cut. For each candidate ``d`` this reports its cosine with
    ``n`` and the residual reduction of one step along ``d`` at its best size in the linear
    model ``x0 -> x0 + gamma J d``: ``1 - min_gamma ||e - gamma J d|| / ||e||`` (1 = solved).

    Args:
        J: ``(D, D)`` Jacobian.
        e: ``(D,)`` error direction (e.g. an inpainting error on a test digit).
        rcond: relative cut-off of the pseudo-inverse.

    Returns:
        ``{"cos_Je", "cos_JTe", "cos_e", "reduction_newton", "reduction_Je", "reduction_JTe", "reduction_e"}``.
    """
    J, e = J.double(), e.double().flatten()
    newton, _ = pinv_solve(J, e, rcond)
    candidates = {"newton": newton, "Je": J @ e, "JTe": J.T @ e, "e": e}
    out: dict[str, float] = {}
    for name, d in candidates.items():
        if name != "newton":
            out[f"cos_{name}"] = float(torch.nn.functional.cosine_similarity(d, newton, dim=0))
        Jd = J @ d
        gamma = float(Jd @ e) / max(float(Jd @ Jd), 1e-300)
        out[f"reduction_{name}"] = 1.0 - float((e - gamma * Jd).norm() / e.norm())
    return out
