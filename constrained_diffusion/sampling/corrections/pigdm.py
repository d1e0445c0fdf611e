r"""ΠGDM: pseudo-inverse-guided diffusion, its Jacobian product through the `Solver` role.

Song, Vahdat, Mardani & Kautz, *Pseudoinverse-Guided Diffusion Models for Inverse Problems*,
ICLR 2023 (Algorithm 1). With ``x0 = D(x_t, t)``, the operator's SVD ``A = U S V^T``
(`svd_of`), ``r_t^2 = sigma_t^2 / (alpha_t^2 + sigma_t^2)`` and the noise level ``sigma_y`` of
``y`` (the constraint's ``noise_std``):

    e      = A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A x0)          (sigma_y > 0)
           = A^+ (y - A x0)                                          (sigma_y = 0, the paper's noiseless form)
    g      = (d x0 / d x_t)^T e                                      # solver.direction(e)
    x_prev = update(x_t, x0) + step_scale alpha_t g

(``alpha_t`` is the paper's ``sqrt(alpha_bar_t)``.) The Jacobian product is the solver's:
``gradient-descent`` gives the paper's ``J^T e`` (1 NBE per step); ``inexact-newton`` swaps it
for ``J e`` by a finite difference (1 NFE, no backward, no activation memory: ``J`` is
symmetric for an ideal denoiser, so this is the same guidance for a good model); ``exact-jvp``
gives ``J e`` by forward-mode AD. Directions of other kinds (``J^-1 e``, ``e``) run but are not
ΠGDM. A ``SecantNewton`` ``J e`` also fits.

Cost per step: 1 NFE + the solver's (gradient descent: 1 NBE; inexact Newton: 1 NFE).
Constraints with a closed-form SVD/pseudo-inverse (`svd_of`); pixel and latent models.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> free = cd.ConstrainedSampler(model, steps=10, inner_steps=0).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> exact = cd.recipes.get("pigdm", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> newton = cd.recipes.get("pigdm", steps=10, solver="inexact-newton").sampler(model).sample(
    ...     c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool(exact.final_residual < 0.5 * free.final_residual), (exact.nfe, exact.nbe), (newton.nfe, newton.nbe)
    (True, (10, 10), (20, 0))
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult, RenamedOptions
from constrained_diffusion.sampling.corrections.operators import svd_of
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep


class PiGDMConfig(RenamedOptions):
    """Options of `PiGDM`.

    Attributes:
        step_scale: the guidance weight (paper: 1).
    """

    model_config = ConfigDict(extra="forbid")
    step_scale: float = Field(1.0, ge=0.0)


@register_correction("pigdm")
class PiGDM(Correction):
    """The update plus ``step_scale alpha_t`` times the solver's direction for the pseudo-inverse error (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = PiGDMConfig
    step_scale: float

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One guided step; refuses a constraint without a closed-form SVD."""
        c = step.constraint
        op = svd_of(c, "ΠGDM")
        graph = step.needs_graph
        x_t, x0 = step.evaluate(x_t, graph=graph)
        (alpha, sigma) = step.now
        x0d = x0.detach()
        r = c.measurement_residual(x0d)
        r_u = op.measurement_u(r, x0d)
        s = op.singular_values(r_u).to(r_u)
        sy = c.noise_std
        if sy is None or float(sy.max()) == 0:
            e = op.pinv(r_u, x0d)
        else:
            rt2 = sigma**2 / (alpha**2 + sigma**2)
            sy2 = sy.to(r_u).reshape(-1, *([1] * (r_u.ndim - 1))) ** 2
            e = op.from_spectral(s * r_u / (rt2 * s**2 + sy2))
        d = step.direction(x_t, e.detach(), x0)
        x_prev = step.update(x_t, x0d) + self.step_scale * alpha * d.detach()
        before = r.flatten(1).norm(dim=1).float()
        return CorrectionResult(x_prev.detach(), x0d, torch.stack([before, before]))
