r"""Multi-secant least squares: the Jacobian seen through pairs ``y_j ~= J s_j``.

Given ``m`` pairs per sample, stacked as columns ``S = [s_1 .. s_m]`` and ``Y = [y_1 .. y_m]``
(``(B, D, m)`` each; a pair is a finite-difference or secant sample of ``J`` along ``s_j``),
the *multi-secant* approximation with initial Jacobian ``gamma I`` (Broyden's "type I" update
in its multi-secant form; Fang & Saad, *Two classes of multisecant methods for nonlinear
acceleration*, Numer. Linear Algebra Appl. 16, 2009) is

    J_m = gamma I + (Y - gamma S) S^+,          so  J_m S = Y  and  J_m v = gamma v  for v ⊥ span(S),

and the "type II" (Anderson) approximation of the inverse is

    H_m = I / gamma + (S - Y / gamma) Y^+,      so  H_m Y = S  and  H_m w = w / gamma  for w ⊥ span(Y).

Applied to a vector, with ``c`` the least-squares coefficients,

    J_m v = Y c + gamma (v - S c),     c = argmin ||S c - v||      (`secant_jvp`)
    H_m w = S c + (w - Y c) / gamma,   c = argmin ||Y c - w||      (`secant_inverse`)

and the relative residual ``rho = ||v - S c|| / ||v||`` (resp. ``||w - Y c|| / ||w||``) says
how much of the vector the pairs do *not* explain: ``rho = 0`` means ``J_m v = J v`` exactly for
an affine map whose pairs are exact. ``gamma = 0`` drops the unexplained part.

The least-squares problems are solved per sample by a truncated SVD in float64 of the
column-normalised matrix (a column is divided by its norm, so ``rcond`` compares directions,
not lengths); singular values ``<= rcond * s_max`` are dropped, zero columns (a sample with
fewer pairs than the batch's widest history) contribute nothing. So a batch of ``B`` is ``B``
independent problems. This is the one copy of the kernel (`SecantNewton` calls it).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lstsq_columns(A: Tensor, b: Tensor, rcond: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Per-sample least squares ``c_i = argmin ||A_i c - b_i||`` by a truncated SVD, in float64.

    Args:
        A: ``(B, D, m)`` columns (zero columns allowed: they get coefficient 0).
        b: ``(B, D)`` right-hand sides.
        rcond: drop singular values ``<= rcond * s_max`` of the column-normalised ``A_i``
            (``0 <= rcond < 1``).

    Returns:
        ``(c, rho)``: coefficients ``(B, m)`` and the relative residual
        ``||b_i - A_i c_i|| / ||b_i||`` ``(B,)`` (0 where ``b_i = 0``; 1 where ``A_i`` has no
        nonzero column), both float64 on ``A``'s device (CPU for devices without float64).

    Raises:
        ValueError: shapes that do not fit, or ``rcond`` outside ``[0, 1)``.

    Examples:
        >>> A = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)  # one column e_1
        >>> c, rho = lstsq_columns(A, torch.tensor([[3.0, 4.0, 0.0]], dtype=torch.float64))
        >>> c.tolist(), rho.tolist()
        ([[3.0, 0.0]], [0.8])
    """
    if A.ndim != 3 or b.ndim != 2 or A.shape[:2] != b.shape:
        raise ValueError(f"lstsq_columns needs A (B, D, m) and b (B, D), got {tuple(A.shape)} and {tuple(b.shape)}")
    if not 0.0 <= rcond < 1.0:
        raise ValueError(f"rcond must be in [0, 1), got {rcond!r}")
    device = A.device if A.device.type in ("cpu", "cuda") else torch.device("cpu")
    A = A.detach().to(device=device, dtype=torch.float64)
    b = b.detach().to(device=device, dtype=torch.float64)
    B, _, m = A.shape
    bnorm = b.norm(dim=1)
    if m == 0:
        return torch.zeros(B, 0, dtype=torch.float64, device=device), torch.where(bnorm > 0, 1.0, 0.0).to(b)
    norms = A.norm(dim=1)  # (B, m)
    alive = norms > 0
    An = A / torch.where(alive, norms, torch.ones_like(norms)).unsqueeze(1)
    U, s, Vh = torch.linalg.svd(An, full_matrices=False)  # (B, D, r), (B, r), (B, r, m)
    smax = s[:, :1]
    kept = (s > rcond * smax) & (smax > 0)
    proj = torch.einsum("bdr,bd->br", U, b)
    coeff = torch.where(kept, proj / torch.where(kept, s, torch.ones_like(s)), torch.zeros_like(s))
    cn = torch.einsum("brm,br->bm", Vh, coeff)
    c = torch.where(alive, cn / torch.where(alive, norms, torch.ones_like(norms)), torch.zeros_like(cn))
    resid = (b - torch.einsum("bdm,bm->bd", A, c)).norm(dim=1)
    rho = torch.where(bnorm > 0, resid / bnorm.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(bnorm))
    return c, rho


def secant_scale(S: Tensor, Y: Tensor) -> Tensor:
    """``gamma_i = max(0, sum_j <s_j, y_j> / sum_j <s_j, s_j>)``: the least-squares fit ``Y ~= gamma S``.

    Args:
        S: ``(B, D, m)`` steps.
        Y: ``(B, D, m)`` responses ``y_j ~= J s_j``.

    Returns:
        ``(B,)`` float64; 0 for a sample without pairs (or a negative fit).

    Examples:
        >>> S = torch.eye(2, dtype=torch.float64).unsqueeze(0)
        >>> secant_scale(S, 3 * S).tolist()
        [3.0]
    """
    S, Y = S.detach().double(), Y.detach().double()
    num = (S * Y).sum(dim=(1, 2))
    den = (S * S).sum(dim=(1, 2))
    gamma = torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(den))
    return gamma.clamp_min(0.0)


def secant_jvp(S: Tensor, Y: Tensor, v: Tensor, gamma: Tensor | float = 0.0, rcond: float = 1e-3) -> tuple[Tensor, Tensor]:
    """``(J_m v, rho)``: the multi-secant ``J v ~= Y c + gamma (v - S c)``, ``c = S^+ v``, per sample.

    Args:
        S: ``(B, D, m)`` steps.
        Y: ``(B, D, m)`` responses, ``y_j ~= J s_j``.
        v: ``(B, D)`` the vector.
        gamma: the initial Jacobian's scale on the complement of ``span(S)``, a float or ``(B,)``.
        rcond: SVD cutoff of `lstsq_columns`.

    Returns:
        ``J_m v`` ``(B, D)`` float64 and ``rho = ||v - S c|| / ||v||`` ``(B,)``.

    Examples:
        >>> M = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
        >>> S = torch.tensor([[[1.0], [1.0]]], dtype=torch.float64)      # one pair, s = (1, 1)
        >>> Jv, rho = secant_jvp(S, M @ S, torch.tensor([[2.0, 2.0]], dtype=torch.float64))
        >>> Jv.round(decimals=12).tolist(), bool(rho < 1e-12)           # v in span(S): exact M v
        ([[6.0, 6.0]], True)
    """
    c, rho = lstsq_columns(S, v, rcond)
    Sd, Yd, vd = S.to(c), Y.to(c), v.to(c)
    g = torch.as_tensor(gamma, dtype=torch.float64, device=c.device).reshape(-1, 1)
    Sc = torch.einsum("bdm,bm->bd", Sd, c)
    return torch.einsum("bdm,bm->bd", Yd, c) + g * (vd - Sc), rho


def secant_inverse(S: Tensor, Y: Tensor, w: Tensor, gamma: Tensor | float = 0.0,
                   rcond: float = 1e-3) -> tuple[Tensor, Tensor]:
    """``(H_m w, rho)``: the Anderson ``J^-1 w ~= S c + (w - Y c) / gamma``, ``c = Y^+ w``, per sample.

    The Newton direction restricted to ``span(S)`` (plus ``1 / gamma`` times the unexplained part;
    ``gamma = 0`` drops it).

    Args:
        S: ``(B, D, m)`` steps.
        Y: ``(B, D, m)`` responses, ``y_j ~= J s_j``.
        w: ``(B, D)`` the right-hand side.
        gamma: scale of the initial Jacobian ``gamma I``, a float or ``(B,)`` (0: no complement).
        rcond: SVD cutoff of `lstsq_columns`.

    Returns:
        ``H_m w`` ``(B, D)`` float64 and ``rho = ||w - Y c|| / ||w||`` ``(B,)``.

    Examples:
        >>> M = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
        >>> S = torch.eye(2, dtype=torch.float64).unsqueeze(0)
        >>> d, rho = secant_inverse(S, M @ S, torch.tensor([[2.0, 2.0]], dtype=torch.float64))
        >>> d.tolist(), rho.tolist()
        ([[1.0, 0.5]], [0.0])
    """
    c, rho = lstsq_columns(Y, w, rcond)
    Sd, Yd, wd = S.to(c), Y.to(c), w.to(c)
    g = torch.as_tensor(gamma, dtype=torch.float64, device=c.device).reshape(-1, 1)
    inv = torch.where(g > 0, 1.0 / g.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(g))
    Yc = torch.einsum("bdm,bm->bd", Yd, c)
    return torch.einsum("bdm,bm->bd", Sd, c) + inv * (wd - Yc), rho
