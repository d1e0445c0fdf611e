r"""Secant Newton: the inner loop's own forwards as free samples of the Jacobian.

`InexactNewton` pays one extra forward per inner step for ``J e ~= (D(x_t + h' e) - x0) / h'``.
But every inner step *already* evaluates ``x0 = D(x_t, t)`` at the updated state, so two
consecutive iterates at the same ``t`` give a secant pair for free:

    s_k = x_t^(k) - x_t^(k-1),      y_k = x0^(k) - x0^(k-1) = J_bar s_k,

with ``J_bar`` the Jacobian averaged over the segment (``= J`` for an affine denoiser). With the
pairs of the current denoising step stacked as ``S = [s_1 .. s_m]``, ``Y = [y_1 .. y_m]``
(``(D, m)`` per sample; optionally the previous step's too, ``keep_previous``, since ``J``
changes slowly with ``t``) the multi-secant approximation (`constrained_diffusion.linalg.secant`)

    J_m = gamma I + (Y - gamma S) S^+          (J_m S = Y, J_m = gamma I on span(S)^perp)

gives the direction with a least-squares fit and no network call:

* ``mode="jvp"`` (default, what `InexactNewton` computes):
  ``d = J_m e = Y c + gamma (e - S c)``, ``c = argmin ||S c - e||``;
* ``mode="inverse"`` (the Newton direction restricted to the history, Anderson's type II):
  ``d = H_m e = S c + (e - Y c) / gamma``, ``c = argmin ||Y c - e||``.

The fit is *poor* when the relative residual ``rho = ||e - S c|| / ||e||`` (``jvp``; ``||e - Y c||
/ ||e||`` for ``inverse``) exceeds ``tol``, i.e. the pairs do not explain enough of ``e``; then, or
when the history is empty, the solver pays **one** finite difference along the unexplained
part ``u = e - S c`` (``e - Y c``): ``J u ~= (D(x_t + h' u) - x0) / h'`` (`fd_jvp`, the
precision-aware ``h`` of `InexactNewton`), stores ``(u, J u)`` as a new pair and refits. In
``jvp`` mode ``e`` then lies in the span and ``d = Y c + J u`` equals `InexactNewton`'s ``J e``
for an affine denoiser. ``gamma = max(0, sum <s_j, y_j> / sum |s_j|^2)`` is the least-squares
scale of the pairs (``initial="scaled-identity"``) or 0 (``initial="zero"``).

Everything is per sample (a batch of ``B`` is ``B`` histories and ``B`` least-squares
problems; a sample whose state did not move adds no pair). A batched forward counts as one
NFE, so a denoising step of ``K`` inner steps costs ``1 + K + F`` forwards, ``F <= K`` the
inner steps at which *some* sample needed a finite difference (`InexactNewton`: ``1 + 2K``).

Host synchronisation: every inner step reads the device once to decide whether any sample
needs the finite difference (``bool(need.any())``: the forward is skipped when none does, which
is the point of the method) and copies its diagnostics (`SecantNewtonInfo`) to the host, so on
a GPU it waits for the queued kernels once per inner step (docs/benchmarks.md, "Which solvers
synchronise").

State: the solver remembers the pairs between calls. It starts a new history when ``t``
changes, when the batch shape changes, and at `reset`, which `ConstrainedSampler.sample`
calls at the start of every run, so one instance can serve many runs.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8), dtype=torch.float64)
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64); mask[..., :4] = 1
    >>> constraint = cd.Inpainting(truth, mask)
    >>> secant = cd.ConstrainedSampler(model, cd.SecantNewton(), steps=10, inner_steps=5)
    >>> newton = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=10, inner_steps=5)
    >>> a = secant.sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
    >>> b = newton.sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool(a.nfe <= 0.75 * b.nfe), b.nfe
    (True, 110)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.finite_difference import check_h, fd_jvp
from constrained_diffusion.linalg.secant import secant_inverse, secant_jvp, secant_scale
from constrained_diffusion.solvers.base import Solver, SolverConfig
from constrained_diffusion.solvers.registry import register
from constrained_diffusion.space import Float, Int, SearchSpace

Mode = Literal["jvp", "inverse"]
Initial = Literal["scaled-identity", "zero"]


class SecantNewtonConfig(SolverConfig):
    """Options of `SecantNewton`."""

    name: Literal["secant-newton"] = "secant-newton"
    mode: Mode = Field(default="jvp", description="'jvp': d = J e (as InexactNewton); 'inverse': d = J^-1 e on the history's span")
    tol: float = Field(default=0.5, ge=0.0, le=1.0,
                       description="pay a finite difference when the relative residual of the fit exceeds tol (0: always, 1: only "
                                   "with an empty history)")
    memory: int = Field(default=8, ge=1, description="most pairs kept per sample and denoising step (the oldest is dropped)")
    keep_previous: bool = Field(default=False, description="also fit with the previous denoising step's pairs")
    initial: Initial = Field(default="scaled-identity",
                             description="the Jacobian on the complement of the pairs' span: gamma I fitted to the pairs, or zero")
    rcond: float = Field(default=1e-3, ge=0.0, lt=1.0,
                         description="drop singular values <= rcond * s_max of the column-normalised least-squares matrix")
    h: float | None = Field(default=None, gt=0.0, le=1.0,
                            description="max-norm of the finite-difference perturbation; None: precision-aware (0.005 in float32)")


@dataclass(frozen=True)
class SecantNewtonInfo:
    """What the last `SecantNewton.direction` call did, per sample.

    Attributes:
        rho: ``(B,)`` relative residual of the fit from the stored pairs, before any finite
            difference (1 for an empty history, 0 where ``e = 0``), float64.
        finite_difference: ``(B,)`` bool, whether the sample paid a finite difference.
        pairs: ``(B,)`` pairs the sample's fit used (after the finite difference).
    """

    rho: Tensor
    finite_difference: Tensor
    pairs: Tensor


class _History:
    """Per-sample ring buffers of ``memory`` pairs ``(s, y)``, flat ``(B, memory, D)`` float64."""

    def __init__(self, batch: int, dim: int, memory: int, device: torch.device) -> None:
        self.S = torch.zeros(batch, memory, dim, dtype=torch.float64, device=device)
        self.Y = torch.zeros_like(self.S)
        self.written = torch.zeros(batch, dtype=torch.long, device=device)  # pairs ever written per sample

    @property
    def count(self) -> Tensor:
        """``(B,)`` pairs held (at most ``memory``)."""
        return self.written.clamp_max(self.S.shape[1])

    def add(self, s: Tensor, y: Tensor, valid: Tensor) -> None:
        """Store ``(s_i, y_i)`` for the samples where ``valid``, over the oldest when full."""
        rows = valid.nonzero().flatten()
        if rows.numel() == 0:
            return
        slot = self.written[rows] % self.S.shape[1]
        self.S[rows, slot] = s[rows].to(self.S)
        self.Y[rows, slot] = y[rows].to(self.Y)
        self.written[rows] += 1


@register
class SecantNewton(Solver):
    """``J e`` (or ``J^-1 e``) from a multi-secant fit of the inner loop's own iterates.

    Attributes:
        mode: ``"jvp"`` (default; ``d ~= J e``) or ``"inverse"`` (``d ~= J^-1 e`` on the span).
        tol: finite difference when the fit's relative residual is ``> tol`` (``0 <= tol <= 1``).
        memory: pairs kept per sample and step (``>= 1``).
        keep_previous: also use the previous denoising step's pairs.
        initial: ``"scaled-identity"`` (``gamma I`` on the complement) or ``"zero"``.
        rcond: SVD cutoff of the least-squares fit.
        h: finite-difference max-norm step; ``None``: precision-aware as `InexactNewton`.

    Raises:
        pydantic.ValidationError: an invalid option, naming the field.

    ``last_info`` (a `SecantNewtonInfo`) reports the last call; ``calls`` and
    ``finite_differences`` count the calls and the calls that paid a (batched) forward since
    the last `reset`.

    Examples:
        >>> SecantNewton(tol=0.3, mode="inverse")
        SecantNewton(mode='inverse', tol=0.3, memory=8, keep_previous=False, initial='scaled-identity', rcond=0.001, h=None)
        >>> SecantNewton(mode="inverse").direction_kind
        'inverse'
    """

    name = "secant-newton"
    direction_kind = "jvp"
    Config = SecantNewtonConfig
    search_space = SearchSpace({"tol": Float(0.05, 0.95), "memory": Int(2, 16), "h": Float(1e-4, 0.1, log=True)})
    """When to trust the secant model, how much history it keeps, and the fallback finite difference's step."""
    mode: Mode
    tol: float
    memory: int
    keep_previous: bool
    initial: Initial
    rcond: float
    h: float | None

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.direction_kind = "jvp" if self.mode == "jvp" else "inverse"  # type: ignore[misc]
        self.reset()

    def reset(self) -> None:
        """Forget every pair and zero the counters (the sampler calls this at the start of a run)."""
        self._t: float | None = None
        self._shape: tuple[int, ...] | None = None
        self._current: _History | None = None
        self._previous: _History | None = None
        self._last: tuple[Tensor, Tensor] | None = None
        self.last_info: SecantNewtonInfo | None = None
        self.calls = 0
        self.finite_differences = 0

    def check(self, denoiser: Denoiser) -> None:
        """Refuse a given ``h`` below the rounding floor of the denoiser's arithmetic (warn near it): `check_h`."""
        check_h(self.h, denoiser.dtype, denoiser.device)

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        """The multi-secant ``J e`` (``J^-1 e``), with one finite difference where the fit is poor.

        Args:
            denoiser: the model ``D`` (called at most once, batched).
            x_t: current state ``(B, *sample_shape)``.
            t: the current time (scalar tensor); a new value starts a new history.
            e: error in ``x0``-space, shape of ``x_t``.
            x0: ``D(x_t, t)``, already evaluated (gives the secant pair and the FD base point).

        Returns:
            ``d``, shape and dtype of ``e``.

        Raises:
            ValueError: ``e`` or ``x0`` has another shape than ``x_t``.
        """
        if tuple(e.shape) != tuple(x_t.shape) or tuple(x0.shape) != tuple(x_t.shape):
            raise ValueError(f"SecantNewton needs e, x0 and x_t of one shape, got e {tuple(e.shape)}, "
                             f"x0 {tuple(x0.shape)}, x_t {tuple(x_t.shape)}")
        x_t, x0, e = x_t.detach(), x0.detach(), e.detach()
        B = x_t.shape[0]
        device = x_t.device if x_t.device.type in ("cpu", "cuda") else torch.device("cpu")
        x = x_t.reshape(B, -1).to(device=device, dtype=torch.float64)
        y0 = x0.reshape(B, -1).to(device=device, dtype=torch.float64)
        v = e.reshape(B, -1).to(device=device, dtype=torch.float64)
        self._observe(float(t), tuple(x_t.shape), x, y0, device)
        self.calls += 1

        S, Y = self._columns()
        d, rho = self._fit(S, Y, v)
        nonzero = v.abs().amax(dim=1) > 0
        held = self._pairs()
        poor = rho > self.tol if self.tol < 1.0 else torch.zeros_like(nonzero)  # tol = 1: never (rho <= 1 up to rounding)
        need = nonzero & ((held == 0) | poor)
        if bool(need.any()):
            u_t = (self._unexplained(S, Y, v) * need.unsqueeze(1)).reshape(x_t.shape).to(device=x_t.device, dtype=x_t.dtype)
            u = u_t.reshape(B, -1).to(v)  # the direction actually perturbed (rounded to the state's dtype)
            Ju = fd_jvp(lambda z: denoiser(z, t), x_t, u_t, self.h, fx=x0, dtype=denoiser.dtype)
            self.finite_differences += 1
            assert self._current is not None
            self._current.add(u, Ju.reshape(B, -1).to(u), need & (u.abs().amax(dim=1) > 0))
            S, Y = self._columns()
            d_new, _ = self._fit(S, Y, v)
            d = torch.where(need.unsqueeze(1), d_new, d)
        d = torch.where(nonzero.unsqueeze(1), d, torch.zeros_like(d))
        self.last_info = SecantNewtonInfo(rho=rho.cpu(), finite_difference=need.cpu(), pairs=self._pairs().cpu())
        return d.reshape(e.shape).to(device=e.device, dtype=e.dtype)

    # --- history -------------------------------------------------------------------------------
    def _observe(self, t: float, shape: tuple[int, ...], x: Tensor, y0: Tensor, device: torch.device) -> None:
        """Start a new history at a new ``t`` or shape; else add the secant pair from the last call."""
        if self._current is None or shape != self._shape or t != self._t:
            keep = self.keep_previous and self._current is not None and shape == self._shape
            self._previous = self._current if keep else None
            self._current = _History(shape[0], x.shape[1], self.memory, device)
            self._t, self._shape = t, shape
        elif self._last is not None:
            s, y = x - self._last[0], y0 - self._last[1]
            self._current.add(s, y, s.abs().amax(dim=1) > 0)
        self._last = (x, y0)

    def _pairs(self) -> Tensor:
        assert self._current is not None
        held = self._current.count
        return held + self._previous.count if self._previous is not None else held

    def _columns(self) -> tuple[Tensor, Tensor]:
        """``(S, Y)`` as ``(B, D, m)`` column matrices (unused slots are zero columns)."""
        assert self._current is not None
        parts = [self._current] + ([self._previous] if self._previous is not None else [])
        S = torch.cat([p.S for p in parts], dim=1).transpose(1, 2)
        Y = torch.cat([p.Y for p in parts], dim=1).transpose(1, 2)
        return S, Y

    # --- the fit -------------------------------------------------------------------------------
    def _gamma(self, S: Tensor, Y: Tensor) -> Tensor | float:
        return secant_scale(S, Y) if self.initial == "scaled-identity" else 0.0

    def _fit(self, S: Tensor, Y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.mode == "jvp":
            return secant_jvp(S, Y, v, self._gamma(S, Y), self.rcond)
        return secant_inverse(S, Y, v, self._gamma(S, Y), self.rcond)

    def _unexplained(self, S: Tensor, Y: Tensor, v: Tensor) -> Tensor:
        """``v - S c`` (``jvp``) or ``v - Y c`` (``inverse``): the part of ``v`` the pairs do not explain."""
        A = S if self.mode == "jvp" else Y
        r, _ = secant_jvp(A, torch.zeros_like(A), v, 1.0, self.rcond)  # Y = 0, gamma = 1: the residual v - A c
        return r
