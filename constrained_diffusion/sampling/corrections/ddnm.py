r"""DDNM: the range-null-space decomposition of ``x0_hat`` for a linear constraint.

Wang, Yu & Zhang, *Zero-Shot Image Restoration Using Denoising Diffusion Null-Space Model*,
ICLR 2023. For ``A x = y`` with the pseudo-inverse ``A^+`` (`svd_of`), at each step:

    x0     = D(x_t, t),   eps_hat = (x_t - alpha_t x0) / sigma_t
    x0'    = A^+ y + (I - A^+ A) x0  =  x0 + w A^+ (y - A x0),       w = 1
    x_prev = alpha_prev x0' + sigma_prev (sqrt(1 - eta^2) eps_hat + eta z)

(the network's own noise estimate and fresh noise ``z`` mixed by the sampler's ``eta``, as in
DDNM's code, with ``eta = 0.85``; ``eta = 0`` is DDIM with the rectified ``x0_hat``). ``A x0_hat' = y`` exactly at every step, so the sample
reproduces the observed entries exactly when the last update lands on the clean point.

Cost per step: 1 NFE, 0 NBE; no solver (no Jacobian product). With ``weight < 1`` it is a
relaxed projection (DDNM+ uses ``weight = Sigma_t`` for noisy ``y``). Time travel, DDNM's
"back and forth" trick, is the `TimeTravel` wrapper: ``{name: time-travel, inner: {name: ddnm}}``.
Pixel and latent models, for a constraint on the denoiser's own space (latent-mask inpainting).

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> out = cd.recipes.get("ddnm", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> float((out.sample - truth)[mask.bool().expand_as(truth)].abs().max()) < 1e-5, out.nfe, out.nbe
    (True, 10, 0)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult
from constrained_diffusion.sampling.corrections.operators import svd_of
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep


class DDNMConfig(BaseModel):
    """Options of `DDNM`.

    Attributes:
        weight: ``w`` in ``x0 + w A^+ (y - A x0)``, in ``[0, 1]`` (1: the exact projection).
    """

    model_config = ConfigDict(extra="forbid")
    weight: float = Field(1.0, ge=0.0, le=1.0)


@register_correction("ddnm")
class DDNM(Correction):
    """Project ``x0_hat`` onto ``{x : A x = y}`` along the null space, then the update (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = DDNMConfig
    uses_solver = False
    moves_x_t = False
    weight: float

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One DDNM step; refuses a constraint without a closed-form SVD/pseudo-inverse."""
        op = svd_of(step.constraint, "DDNM")
        x_t, x0 = step.evaluate(x_t)
        before = step.constraint.residual(x0).float()
        alpha, sigma = step.now
        eps = (x_t - alpha * x0.detach()) / sigma
        x0 = op.project(x0.detach(), self.weight)
        x_prev = step.mixed_update(x0, eps, step.eta**2)
        rows = torch.stack([before, step.constraint.residual(x0).float()])
        return CorrectionResult(x_prev.detach(), x0, rows)
