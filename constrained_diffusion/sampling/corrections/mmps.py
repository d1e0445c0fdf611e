r"""MMPS: moment-matching posterior sampling, by matrix-free GMRES on finite-difference JVPs.

Rozet, Andry, Lanusse & Louppe, *Learning Diffusion Priors from Observations by Expectation
Maximization*, NeurIPS 2024 (moment matching posterior sampling). By Tweedie's formula the
posterior of ``x0`` given ``x_t`` has mean ``x0_hat = D(x_t, t)`` and covariance
``V_t = (sigma_t^2 / alpha_t) J``, ``J = d x0_hat / d x_t``. Matching ``p(x0 | x_t)`` by
``N(x0_hat, V_t)`` and ``y = A x0 + n``, ``n ~ N(0, sigma_y^2 I)``:

    u      = (sigma_y^2 I + A V_t A^T)^-1 (y - A x0_hat)        # GMRES, one JVP J v per iteration
    e      = A^T u
    x0'    = x0_hat + step_scale (sigma_t^2 / alpha_t) J^T e            # E[x0 | x_t, y]; J^T e: solver.direction(e)
    x_prev = update(x_t, x0')

The Krylov solve uses the library's kernels (`constrained_diffusion.linalg.gmres` on
`constrained_diffusion.linalg.finite_difference.fd_jvp`, forward only). The last product is the
solver's: ``gradient-descent`` gives the paper's ``J^T e`` (1 NBE); ``inexact-newton`` swaps it
for ``J e`` (1 NFE, equal for a symmetric, ideal denoiser): MMPS entirely without backprop.
``exact-jvp`` (forward-mode ``J e``) fits too.

Cost per step: ``1 + iterations`` NFE + the solver's. Linear constraints (`LinearConstraint`,
any operator with ``forward``/``adjoint``); pixel and latent models; ``alpha_t > 0`` (a flow's
pure-noise point takes the plain update).

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> free = cd.ConstrainedSampler(model, steps=10, inner_steps=0).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> out = cd.recipes.get("mmps", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool(out.final_residual < 0.5 * free.final_residual), out.nfe, out.nbe
    (True, 40, 10)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.constraints.base import LinearConstraint
from constrained_diffusion.linalg.finite_difference import fd_jvp
from constrained_diffusion.linalg.gmres import gmres
from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult, RenamedOptions
from constrained_diffusion.sampling.corrections.operators import noise_level
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep


class MMPSConfig(RenamedOptions):
    """Options of `MMPS`.

    Attributes:
        iterations: GMRES iterations (JVPs) per step (``>= 1``).
        step_scale: the weight of the correction (paper: 1).
        noise_std: ``sigma_y`` when the constraint has none (``> 0``; keeps the system definite).
        h: the finite-difference step of the JVPs (``None``: the solver's ``h``, else precision-aware).
    """

    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(3, ge=1)
    step_scale: float = Field(1.0, ge=0.0)
    noise_std: float = Field(0.05, gt=0.0)
    h: float | None = Field(None, gt=0.0)


@register_correction("mmps")
class MMPS(Correction):
    """The moment-matched posterior mean as ``x0_hat``, then the update (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = MMPSConfig
    iterations: int
    step_scale: float
    noise_std: float
    h: float | None

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One MMPS step; refuses a constraint that is not linear."""
        c = step.constraint
        if not isinstance(c, LinearConstraint):
            raise TypeError(f"MMPS needs a LinearConstraint (A x = y with forward and adjoint), got {type(c).__name__}")
        graph = step.needs_graph
        (alpha, sigma) = step.now
        x_t, x0 = step.evaluate(x_t, graph=graph)
        x0d, xt = x0.detach(), x_t.detach()
        r = c.measurement_residual(x0d)
        before = r.flatten(1).norm(dim=1).float()
        if alpha <= 0:
            return CorrectionResult(step.update(xt, x0d).detach(), x0d, torch.stack([before, before]))
        sy2 = noise_level(c, self.noise_std) ** 2
        v_t = sigma**2 / alpha
        h = self.h if self.h is not None else getattr(step.solver, "h", None)
        shape = r.shape

        @torch.no_grad()
        def matvec(u: Tensor) -> Tensor:
            w = c.adjoint(u.reshape(shape).to(x0d))
            jw = fd_jvp(lambda x: step.denoiser(x, step.t), xt, w.expand_as(xt).contiguous(), h, fx=x0d, dtype=step.denoiser.dtype)
            return (sy2 * u + v_t * c.forward(jw).reshape(u.shape).to(u))

        u = gmres(matvec, r.reshape(r.shape[0], -1), self.iterations).x.reshape(shape).to(x0d)
        e = c.adjoint(u)
        d = step.direction(x_t, e.expand_as(x0d).detach(), x0)
        x0p = x0d + self.step_scale * v_t * d.detach()
        return CorrectionResult(step.update(xt, x0p).detach(), x0p, torch.stack([before, c.residual(x0p).float()]))
