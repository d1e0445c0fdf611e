r"""Exact Newton: the direction ``d = J^-1 e`` that the inexact-Newton method approximates.

The constraint asks the clean estimate to reach a target, ``x0_hat(x_t) = x0*``, and the
constraint supplies the error ``e`` in ``x0``-space (``e = x0* - x0_hat`` for inpainting; the
negative gradient of the loss in general). Newton's method linearises the denoiser around the
current state,

    x0_hat(x_t + d) ~= x0_hat(x_t) + J d,       J = d x0_hat / d x_t   (the (D, D) Jacobian),

and chooses the ``d`` that removes the error in the linear model: ``J d = e``, i.e.
``d = J^-1 e`` (for a singular or ill-conditioned ``J``, the least-squares / pseudo-inverse
solution). Graikos, Jojic & Samaras (NeurIPS 2025) replace ``J^-1 e`` by ``J e``
(`InexactNewton`, one extra forward pass); this solver computes the Newton direction itself,
per sample (a batch is ``B`` independent linear systems), so the two can be compared.

Two methods:

* ``"gmres"`` (default, matrix-free) — GMRES (Saad & Schultz, *GMRES: a generalized minimal
  residual algorithm for solving nonsymmetric linear systems*, SIAM J. Sci. Stat. Comput. 7,
  1986). From ``d_0 = 0``, iteration ``k`` takes the ``d`` in the Krylov space
  ``K_k = span{e, J e, ..., J^{k-1} e}`` that minimises ``||e - J d||``: the Arnoldi process
  builds an orthonormal basis ``V_k`` of ``K_k`` (first vector ``e / ||e||``) and the
  ``(k+1) x k`` Hessenberg matrix ``H_k`` with ``J V_k = V_{k+1} H_k``; then
  ``d = V_k y`` with ``y = argmin ||beta e_1 - H_k y||``, ``beta = ||e||``. The small
  least-squares problem is kept in QR form by Givens rotations, which also give the residual
  ``||e - J d||`` after every iteration for free; the iteration stops when
  ``||e - J d|| / ||e|| <= tol`` (for a batch, each sample stops — its ``d`` is frozen — at
  its own iteration and the loop ends when every sample has; so a batch equals its samples run
  one at a time) or after ``iterations`` steps (at most ``D``, where the Krylov space is the
  whole space). ``J`` is only touched through products ``J v``:

  - ``jvp="finite-difference"``: ``J v ~= (D(x_t + h' v, t) - x0) / h'`` with
    ``h' = h / max|v|`` (the perturbation has max-norm ``h``, as in `InexactNewton`), reusing
    the sampler's ``x0 = D(x_t, t)``. Cost per inner step: one forward pass per Krylov
    iteration (at most ``iterations``) beyond the reused one, no backward, no graph.
  - ``jvp="forward"``: forward-mode AD (`forward_jvp`), exact up to rounding; one
    forward-AD pass (about 2-3 forwards of compute, counted as one NFE) per Krylov iteration.

  Memory: the basis, ``(iterations + 1)`` vectors of the size of the batch.

* ``"lstsq"`` (dense, for small ``D <= max_dim``) — the full Jacobian of each sample by
  reverse mode (`constrained_diffusion.linalg.jacobian.dense_jacobian`, ``chunk`` rows per backward pass:
  ``ceil(D / chunk)`` forwards with a graph and as many backwards per sample), then
  ``d = J^+ e`` through the SVD ``J = U S V^T`` in float64: singular values
  ``<= rcond * s_max`` are dropped (``rcond=None``: the numerical-rank cutoff
  ``eps * D * s_max`` of `numpy.linalg.lstsq`, i.e. the exact solution ``J^-1 e`` whenever
  ``J`` is numerically invertible). Deterministic, and a reference for ``"gmres"``.

Host synchronisation: ``"gmres"`` reads the device once per Krylov iteration (it stops when no
sample is still active, ``bool(active.any())``) and returns its residuals on the host, so on a
GPU every iteration waits for the queued kernels; ``"lstsq"`` works on the host. Exact Newton
is a reference, not the fast path (docs/benchmarks.md, "Which solvers synchronise").

Relation to `InexactNewton` (``d = J e``): both live in Krylov spaces of ``J`` and ``e``, but
GMRES with ``iterations=1`` returns ``d = y e`` with ``y = <J e, e> / ||J e||^2`` — a multiple
of ``e``, *not* of ``J e``: the one JVP only sets the step length (which the sampler's
normalisation discards, keeping the sign). ``J e`` itself lies in ``K_2``; GMRES needs
``k >= 2`` iterations to use it and ``k ~ D`` (or a fast-converging spectrum) to reach
``J^-1 e``. The sampler normalises ``d`` by ``max|d|`` per sample, so only its direction
matters there; `ExactNewton.solve` returns the unnormalised ``J^-1 e`` and a report.
With that normalisation a step moves ``x_t`` by ``lr`` in max-norm, so on an ill-conditioned
``J`` (a smooth prior, early times) ``J^-1 e`` — dominated by the directions that ``J``
shrinks — moves ``x0`` very little per step, and a truncated GMRES (small ``iterations``,
closer to ``e`` and ``J e``) can reduce the constraint residual faster than the exact step.

Accuracy: with finite differences each ``J v`` carries an error of order
``h * curvature + eps * |x0| / h'`` (about ``1e-3`` relative for float32 networks at the
default ``h``), so the true residual ``||e - J d|| / ||e||`` cannot go much below that times
the conditioning of the Krylov problem, whatever ``tol`` says: GMRES's residual estimate is
exact for the operator it sees (the finite-difference one). Use ``jvp="forward"`` for
tolerances below about ``1e-3`` on float32 networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.finite_difference import check_h, fd_jvp
from constrained_diffusion.linalg.gmres import gmres
from constrained_diffusion.linalg.jacobian import dense_jacobian
from constrained_diffusion.linalg.pinv import pinv_solve
from constrained_diffusion.solvers.base import Solver, SolverConfig
from constrained_diffusion.solvers.exact_jvp import forward_jvp, math_attention
from constrained_diffusion.solvers.registry import register
from constrained_diffusion.space import Float, Int, SearchSpace

Method = Literal["gmres", "lstsq"]
JVP = Literal["finite-difference", "forward"]


class ExactNewtonConfig(SolverConfig):
    """Options of `ExactNewton`."""

    name: Literal["exact-newton"] = "exact-newton"
    method: Method = Field(default="gmres", description="'gmres' (matrix-free Krylov solver) or 'lstsq' (dense Jacobian + SVD)")
    iterations: int = Field(default=10, ge=1, description="gmres: Krylov dimension k, the most JVPs per direction (capped at D)")
    tol: float = Field(default=1e-3, ge=0.0, lt=1.0,
                       description="gmres: stop once the relative residual ||e - J d|| / ||e|| is <= tol (0: run all iterations)")
    jvp: JVP = Field(default="finite-difference",
                     description="gmres: J v by a finite difference of two forwards or by forward-mode AD")
    h: float | None = Field(default=None, gt=0.0, le=1.0,
                            description="gmres, finite-difference: max-norm of the perturbation (None: precision-aware, 0.005 in float32)")
    max_dim: int = Field(default=4096, ge=1, description="lstsq: largest D = prod(sample_shape) for the dense Jacobian")
    rcond: float | None = Field(default=None, ge=0.0, lt=1.0,
                                description="lstsq: drop singular values <= rcond * s_max (None: numerical-rank cutoff eps * D * s_max)")
    chunk: int = Field(default=64, ge=1, description="lstsq: Jacobian rows per backward pass")


@dataclass(frozen=True)
class ExactNewtonInfo:
    """What the last `ExactNewton` solve achieved, per sample.

    Attributes:
        residual: relative residual ``||e - J d|| / ||e||`` (0 where ``e = 0``), float64 on the
            CPU. For ``"gmres"`` GMRES's own estimate (exact for the JVP operator it used: the
            finite-difference one with ``jvp="finite-difference"``); for ``"lstsq"`` computed
            with the dense Jacobian.
        iterations: ``"gmres"``: Krylov iterations (JVPs) that the sample's ``d`` used;
            ``"lstsq"``: singular values kept (the rank of the pseudo-inverse).
        converged: ``"gmres"``: ``residual <= tol``, an invariant Krylov space, or ``e = 0``;
            ``"lstsq"``: always true.
        forwards: network forward evaluations the solve cost (the whole batch).
        backwards: backward passes the solve cost.
    """

    residual: Tensor
    iterations: Tensor
    converged: Tensor
    forwards: int
    backwards: int


@register
class ExactNewton(Solver):
    """The Newton direction ``d = J^-1 e`` by GMRES on Jacobian-vector products, or densely.

    Attributes:
        method: ``"gmres"`` (default) or ``"lstsq"`` (dense; ``D <= max_dim``).
        iterations: GMRES Krylov dimension ``k`` (``>= 1``; capped at ``D``).
        tol: GMRES relative-residual tolerance for stopping early (``0 <= tol < 1``).
        jvp: ``"finite-difference"`` (default; reuses the sampler's ``x0``) or ``"forward"``.
        h: max-norm of the finite-difference perturbation; ``None`` (default): precision-aware
            (`default_h` of the denoiser's dtype, ``0.005`` in float32), as `InexactNewton`.
        max_dim: largest ``D`` that ``"lstsq"`` accepts.
        rcond: ``"lstsq"`` pseudo-inverse cutoff relative to the largest singular value.
        chunk: ``"lstsq"`` Jacobian rows per backward pass.

    Raises:
        pydantic.ValidationError: an invalid option, naming the field.

    The report of the last solve is in `last_info` (see `ExactNewtonInfo`).
    """

    name = "exact-newton"
    direction_kind = "inverse"
    Config = ExactNewtonConfig
    search_space = SearchSpace({"iterations": Int(2, 20), "tol": Float(1e-4, 0.5, log=True)})
    """The Krylov dimension and the relative tolerance of the GMRES solve."""
    method: Method
    iterations: int
    tol: float
    jvp: JVP
    h: float | None
    max_dim: int
    rcond: float | None
    chunk: int

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.last_info: ExactNewtonInfo | None = None

    def check(self, denoiser: Denoiser) -> None:
        """Refuse a given ``h`` below the rounding floor of the denoiser's arithmetic (warn near it): `check_h`."""
        if self.jvp == "finite-difference":
            check_h(self.h, denoiser.dtype, denoiser.device)

    # ----------------------------------------------------------------------------------------
    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        return self.solve(denoiser, x_t, t, e, x0)[0]

    def solve(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor,
              x0: Tensor | None = None) -> tuple[Tensor, ExactNewtonInfo]:
        """``(d, info)``: the Newton direction ``J^-1 e`` (shape and dtype of ``e``) and a report.

        Args:
            denoiser: the model ``D``.
            x_t: current state ``(B, *sample_shape)``.
            t: the current time (scalar tensor).
            e: the error in ``x0``-space, shape of ``x_t``.
            x0: ``D(x_t, t)`` if already evaluated (reused by the finite difference; evaluated,
                and counted, when ``None``).

        Raises:
            ValueError: ``"lstsq"`` with ``D = prod(sample_shape) > max_dim``; shapes that differ.
        """
        if tuple(e.shape) != tuple(x_t.shape):
            raise ValueError(f"e has shape {tuple(e.shape)} but x_t has shape {tuple(x_t.shape)}")
        nfe0, nbe0 = denoiser.nfe, denoiser.nbe
        x_t, e = x_t.detach(), e.detach()
        if self.method == "lstsq":
            d, residual, iterations, converged = self._lstsq(denoiser, x_t, t, e)
        else:
            d, residual, iterations, converged = self._gmres(denoiser, x_t, t, e, x0)
        info = ExactNewtonInfo(residual=residual, iterations=iterations, converged=converged,
                               forwards=denoiser.nfe - nfe0, backwards=denoiser.nbe - nbe0)
        self.last_info = info
        return d, info

    # --- GMRES --------------------------------------------------------------------------------
    def _matvec(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, x0: Tensor | None) -> Callable[[Tensor], Tensor]:
        """``V -> J V`` on flat ``(B, D)`` directions (zero rows give zero products).

        With finite differences the sampler's ``x0`` is reused, or evaluated (and counted) once.
        """
        cache = {"x0": x0}

        def matvec(v: Tensor) -> Tensor:
            v = v.reshape(x_t.shape)
            if self.jvp == "forward":
                try:
                    return forward_jvp(denoiser, x_t, t, v.to(x_t.dtype))[1]
                except (NotImplementedError, RuntimeError) as exc:
                    raise RuntimeError(f"ExactNewton(jvp='forward'): forward-mode AD failed through the denoiser "
                                       f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                       "use jvp='finite-difference'") from exc
            with torch.no_grad():
                if cache["x0"] is None:
                    cache["x0"] = denoiser(x_t, t)
                return fd_jvp(lambda x: denoiser(x, t), x_t, v, self.h, fx=cache["x0"], dtype=denoiser.dtype)

        return matvec

    def _gmres(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor,
               x0: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        res = gmres(self._matvec(denoiser, x_t, t, x0), e.reshape(e.shape[0], -1), self.iterations, self.tol)
        return res.x.reshape(e.shape).to(e.dtype), res.residual, res.iterations, res.converged

    # --- dense --------------------------------------------------------------------------------
    def _lstsq(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        D = math.prod(denoiser.sample_shape)
        if D > self.max_dim:
            raise ValueError(f"ExactNewton(method='lstsq') builds the dense D x D Jacobian, but D = prod(sample_shape) "
                             f"= {D} exceeds max_dim={self.max_dim}; use method='gmres' (matrix-free) or raise max_dim")
        B = e.shape[0]
        device = e.device if e.device.type in ("cpu", "cuda") else torch.device("cpu")  # float64 SVD
        flat_e = e.reshape(B, -1).to(device=device, dtype=torch.float64)
        d = torch.zeros_like(flat_e)
        residual = torch.zeros(B, dtype=torch.float64)
        rank = torch.zeros(B, dtype=torch.long)
        for b in range(B):
            beta = flat_e[b].norm()
            if not bool(beta > 0):
                continue
            with math_attention():
                J = dense_jacobian(lambda x: denoiser(x, t), x_t[b : b + 1], self.chunk, denoiser.count_backward).to(device)
            d[b], rank[b] = pinv_solve(J, flat_e[b], self.rcond)
            residual[b] = float((flat_e[b] - J @ d[b]).norm() / beta)
        return (d.reshape(e.shape).to(device=e.device, dtype=e.dtype), residual, rank, torch.ones(B, dtype=torch.bool))
