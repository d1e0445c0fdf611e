"""One denoising step ``t -> t_prev`` as a correction sees it: the model, the constraint, the
times, and the operations a correction composes (evaluate ``x0_hat``, take the DDIM / Euler
update, re-noise, probe the Jacobian's spectrum).

The engine builds one `DenoisingStep` per grid point and hands it to the sampler's
`Correction`; a correction never touches the grid, the noise generator or the counters itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.arnoldi import largest_eigenvalue
from constrained_diffusion.linalg.finite_difference import fd_jvp
from constrained_diffusion.sampling.noise import Generator, randn
from constrained_diffusion.sampling.update import ddim_update, posterior_noise_scale, renoise
from constrained_diffusion.solvers.base import Solver


@dataclass
class DenoisingStep:
    """Step ``index`` of ``steps``, from time ``t`` (``now = (alpha_t, sigma_t)``) to ``prev``.

    Attributes:
        denoiser: the model ``D``.
        solver: the direction (``None`` for corrections that use none).
        constraint: the constraint on ``x0_hat``.
        t: the current time (scalar tensor).
        now: ``(alpha_t, sigma_t)``.
        prev: ``(alpha, sigma)`` of the point the update moves to.
        index: the step's position in the grid (0 = the noisiest).
        steps: the number of steps of the run.
        eta: DDIM stochasticity.
        generator: the run's noise generator(s).
        noise: the noise rule of `update` (`SamplerConfig.noise`): ``"ddim"`` (DDIM's
            ``eta``-scaled ``c``) or ``"one-step-posterior"`` (``eta sqrt(beta_tilde_t)``).
        beta: the single-step ``beta_t`` at ``t``, needed by ``"one-step-posterior"``.
    """

    denoiser: Denoiser
    solver: Solver | None
    constraint: Constraint
    t: Tensor
    now: tuple[float, float]
    prev: tuple[float, float]
    index: int
    steps: int
    eta: float
    generator: Generator
    noise: str = "ddim"
    beta: float | None = None

    @property
    def fraction(self) -> float:
        """``index / steps``: where in the run this step lies (0 = first)."""
        return self.index / self.steps

    def evaluate(self, x_t: Tensor, graph: bool = False) -> tuple[Tensor, Tensor]:
        """``(x_t, D(x_t, t))``; with ``graph`` ``x_t`` is a fresh leaf and ``x0`` keeps a graph."""
        if not graph:
            with torch.no_grad():
                return x_t, self.denoiser(x_t, self.t)
        context: Any = self.solver.evaluation_context() if self.solver is not None else torch.enable_grad()
        with torch.enable_grad(), context:
            leaf = x_t.detach().requires_grad_(True)
            return leaf, self.denoiser(leaf, self.t)

    def direction(self, x_t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        """The solver's direction for error ``e`` at ``x_t`` (``x0 = D(x_t, t)``, reused)."""
        if self.solver is None:
            raise ValueError("this correction asked for a solver direction, but the sampler has no solver")
        return self.solver.direction(self.denoiser, x_t, self.t, e, x0)

    def update(self, x_t: Tensor, x0: Tensor, eps: Tensor | None = None) -> Tensor:
        """The DDIM / Euler step ``x_t -> x_prev`` (noise drawn only when ``eta > 0``).

        ``x_prev = alpha_prev x0 + sqrt(sigma_prev^2 - c^2) eps_hat + c z`` with ``c`` from
        `noise`: DDIM's ``eta``-scaled value, or ``eta sqrt(beta_t sigma_prev^2 / sigma_t^2)``.
        """
        (alpha, sigma), (alpha_prev, sigma_prev) = self.now, self.prev
        noise = None
        if self.eta > 0 and sigma_prev > 0:
            noise = randn(x_t.shape[0], tuple(x_t.shape[1:]), self.generator, x_t.device, x_t.dtype)
        scale = None
        if self.noise == "one-step-posterior":
            if self.beta is None:
                raise ValueError("noise='one-step-posterior' needs the single-step beta of the step (beta=None)")
            scale = posterior_noise_scale(self.beta, sigma, sigma_prev, self.eta)
        return ddim_update(x_t.detach(), x0.detach(), alpha, sigma, alpha_prev, sigma_prev, self.eta, noise, eps=eps,
                           noise_scale=scale)

    def unguided_update(self, x_t: Tensor, x0: Tensor) -> Tensor:
        """``x_prev - x_t`` of the deterministic update from ``(x_t, x0)`` (FreeDoM's scale)."""
        (alpha, sigma), (alpha_prev, sigma_prev) = self.now, self.prev
        return ddim_update(x_t.detach(), x0.detach(), alpha, sigma, alpha_prev, sigma_prev) - x_t.detach()

    @property
    def needs_graph(self) -> bool:
        """Whether `evaluate` must keep the network's graph: the solver takes ``J^T e`` by backprop."""
        return bool(self.solver is not None and self.solver.requires_graph)

    def mixed_update(self, x0: Tensor, eps: Tensor | None, zeta: float) -> Tensor:
        """``x_prev = alpha_prev x0 + sigma_prev (sqrt(1 - zeta) eps + sqrt(zeta) z)``; shapes ``(B, *sample_shape)``.

        The update of the methods that re-noise an edited ``x0`` with a share ``zeta`` in
        ``[0, 1]`` of fresh noise ``z``: DDNM (``zeta = eta^2``), DiffPIR (its ``zeta``), DAPS and
        RED-diff (``zeta = 1``: no memory of ``eps``, which may then be ``None``). ``z`` is drawn
        only when ``sigma_prev > 0`` and ``zeta > 0``.
        """
        alpha_prev, sigma_prev = self.prev
        x_prev = alpha_prev * x0
        if zeta < 1:
            if eps is None:
                raise ValueError(f"zeta={zeta} < 1 keeps a share of eps, so eps must be given")
            x_prev = x_prev + sigma_prev * math.sqrt(1 - zeta) * eps
        if sigma_prev > 0 and zeta > 0:
            x_prev = x_prev + sigma_prev * math.sqrt(zeta) * randn(x0.shape[0], tuple(x0.shape[1:]), self.generator, x0.device, x0.dtype)
        return x_prev

    @property
    def can_renoise(self) -> bool:
        """Whether ``x_prev`` can be taken back to ``t`` (the next point is neither clean nor pure noise)."""
        alpha_prev, sigma_prev = self.prev
        return alpha_prev > 0 and sigma_prev > 0

    def renoise(self, x_prev: Tensor) -> Tensor:
        """``x_t ~ q(x_t | x_prev)``: back from ``t_prev`` to ``t`` along the forward process."""
        (alpha, sigma), (alpha_prev, sigma_prev) = self.now, self.prev
        noise = randn(x_prev.shape[0], tuple(x_prev.shape[1:]), self.generator, x_prev.device, x_prev.dtype)
        return renoise(x_prev, alpha, sigma, alpha_prev, sigma_prev, noise)

    def spectral_radius(self, x_t: Tensor, x0: Tensor, iterations: int) -> Tensor:
        """``(B,)`` largest ``|eigenvalue|`` of ``J`` at ``x_t``: Arnoldi on finite-difference JVPs.

        The step is the solver's ``h`` when it has one and it is set, else the precision-aware
        `default_h` of the denoiser's dtype (``H_PAPER = 0.005`` in float32); the start vector is
        seeded, so the estimate is deterministic.
        """
        h = getattr(self.solver, "h", None)
        start = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32).to(x_t, non_blocking=True)
        x_t, x0 = x_t.detach(), x0.detach()
        return largest_eigenvalue(
            lambda v: fd_jvp(lambda x: self.denoiser(x, self.t), x_t, v, h, fx=x0, dtype=self.denoiser.dtype), start, iterations)
