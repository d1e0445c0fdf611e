"""Step-size rules: how far the sampler moves along a solver's direction ``d``.

Each rule maps the step's base size ``lambda_k`` (the config's ``lr`` schedule) and the
direction ``d`` (shape ``(B, *sample_shape)``) to a per-sample factor ``s`` of shape
``(B, 1, ..., 1)``; the update is ``x <- x + s d``.

* ``"dynamic"`` — ``s = lambda / ||d||_inf``: the paper's rule (Graikos et al., NeurIPS 2025,
  "dynamic infinity-norm scaling"); no pixel moves by more than ``lambda``.
* ``"constant"`` — ``s = lambda``: the raw direction, e.g. a plain gradient step.
* ``"residual"`` — ``s = lambda / r`` with ``r`` the constraint's residual. For a linear
  constraint (also through a decoder, `DecodedConstraint`) ``e = A^T (y - A x0)`` is the
  negative gradient of ``0.5 r^2``, so this step follows the gradient of the norm ``r``
  itself: DPS's ``zeta / ||y - A(x0)||`` (Chung et al., ICLR 2023). For a nonlinear
  constraint, whose residual is its loss ``L``, it is a step along ``-grad log L``.
* ``"norm-ratio"`` — ``s = lambda ||Delta||_2 / ||d||_2`` with ``Delta`` the unguided
  sampler update of this step (``x_prev - x_t``): the guidance moves ``lambda`` times as far as
  the sampler itself, FreeDoM's rescaling (Yu et al., ICCV 2023).
* ``"arnoldi"`` — ``s = lambda / mu^2`` with ``mu`` the largest ``|eigenvalue|`` of ``J``
  estimated by ``n`` Arnoldi steps on finite-difference JVPs at the step's ``x_t``. For
  ``d = J e`` the error contracts as ``e <- (I - s J^2) e`` along an eigenvector, so
  ``lambda < 2`` is the stability bound and ``lambda = 1`` removes the dominant component.
  The paper's reference code (its Jacobian-analysis notebook) compares this rule, with
  ``lambda = 0.5, 1.5, 3``, against the dynamic rule on Stable Diffusion; meant for
  ``d = J e`` (`InexactNewton`, `ExactJVP`).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

StepSizeRule = Literal["dynamic", "constant", "residual", "norm-ratio", "arnoldi"]
STEP_SIZE_RULES: tuple[StepSizeRule, ...] = ("dynamic", "constant", "residual", "norm-ratio", "arnoldi")


def per_sample(v: Tensor, ndim: int) -> Tensor:
    """A ``(B,)`` tensor reshaped to ``(B, 1, ..., 1)`` (``ndim`` dimensions), to broadcast per sample."""
    return v.reshape(-1, *([1] * (ndim - 1)))


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 (a zero direction or residual means no step)."""
    ok = den > 0
    return torch.where(ok, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))


def step_factor(rule: StepSizeRule, lam: float, d: Tensor, residual: Tensor | None = None,
                update: Tensor | None = None, mu: Tensor | None = None) -> Tensor:
    """Per-sample factor ``s`` (shape ``(B, 1, ..., 1)``) for direction ``d``.

    Args:
        rule: one of `STEP_SIZE_RULES`.
        lam: the base step size ``lambda``.
        d: the direction, ``(B, *sample_shape)``.
        residual: ``(B,)`` constraint residual (rule ``"residual"``).
        update: the unguided update ``x_prev - x_t`` (rule ``"norm-ratio"``).
        mu: ``(B,)`` largest ``|eigenvalue|`` of ``J`` (rule ``"arnoldi"``).
    """
    d = d.detach()
    flat = d.flatten(1)
    if rule == "dynamic":
        s = _safe_ratio(torch.full_like(flat[:, 0], lam), flat.abs().amax(dim=1))
    elif rule == "constant":
        s = torch.full_like(flat[:, 0], lam)
    elif rule == "residual":
        if residual is None:
            raise ValueError("the 'residual' step-size rule needs the residual")
        s = _safe_ratio(torch.full_like(flat[:, 0], lam), residual.to(d))
    elif rule == "norm-ratio":
        if update is None:
            raise ValueError("the 'norm-ratio' step-size rule needs the unguided update")
        s = _safe_ratio(lam * update.detach().flatten(1).norm(dim=1).to(d), flat.norm(dim=1))
    elif rule == "arnoldi":
        if mu is None:
            raise ValueError("the 'arnoldi' step-size rule needs the eigenvalue estimate mu")
        s = _safe_ratio(torch.full_like(flat[:, 0], lam), mu.to(d) ** 2)
    else:
        raise ValueError(f"step_size must be one of {STEP_SIZE_RULES}, got {rule!r}")
    return per_sample(s, d.ndim)


def largest_eigenvalue(matvec: Callable[[Tensor], Tensor], start: Tensor, n: int) -> Tensor:
    """Per-sample largest ``|eigenvalue|`` of a batched operator by ``n`` Arnoldi steps.

    Args:
        matvec: ``V -> A V`` on ``(B, *shape)`` tensors, sample ``i`` by its own ``A_i``
            (one batched call per Arnoldi step).
        start: start vectors ``(B, *shape)``, nonzero.
        n: Arnoldi steps (``>= 1``).

    Returns:
        ``(B,)`` float64: the largest magnitude among the Ritz values of each sample's
        ``n x n`` Hessenberg matrix (exact if the Krylov space becomes invariant earlier).
    """
    if n < 1:
        raise ValueError(f"arnoldi_iterations must be >= 1, got {n}")
    B = start.shape[0]
    q = start.detach().flatten(1).double()
    Q = [q / q.norm(dim=1, keepdim=True).clamp_min(1e-300)]
    H = torch.zeros(B, n + 1, n, dtype=torch.float64)
    size = torch.full((B,), n, dtype=torch.long)
    alive = torch.ones(B, dtype=torch.bool)
    for j in range(n):
        w = matvec(Q[j].reshape(start.shape).to(start)).detach().flatten(1).double()
        basis = torch.stack(Q, dim=1)  # (B, j+1, D)
        for _ in range(2):  # classical Gram-Schmidt, twice
            coeffs = torch.einsum("bkd,bd->bk", basis, w)
            H[:, : j + 1, j] += coeffs.cpu()
            w = w - torch.einsum("bkd,bk->bd", basis, coeffs)
        norm = w.norm(dim=1)
        H[:, j + 1, j] = norm.cpu()
        broke = alive & (norm.cpu() < 1e-12 * H[:, : j + 1, j].norm(dim=1).clamp_min(1e-300))
        size[broke] = j + 1
        alive &= ~broke
        if not bool(alive.any()):
            break
        keep = alive.to(w.device).unsqueeze(1)  # a finished sample continues with zeros
        Q.append(torch.where(keep, w / norm.clamp_min(1e-300).unsqueeze(1), torch.zeros_like(w)))
    mus = []
    for b in range(B):
        m = int(size[b])
        mus.append(torch.linalg.eigvals(H[b, :m, :m]).abs().max())
    return torch.stack(mus)
