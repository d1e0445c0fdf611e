r"""DiffPIR: a half-quadratic-splitting proximal step on ``x0_hat`` inside each denoising step.

Zhu, Zhang, Liang, Cao, Wen, Timofte & Van Gool, *Denoising Diffusion Models for Plug-and-Play
Image Restoration*, CVPR Workshops 2023 (Algorithm 1). With ``x0 = D(x_t, t)`` (the prior's
proximal step), ``rho_t = lam sigma_y^2 alpha_t^2 / sigma_t^2`` (``sigma_t / alpha_t`` is the
paper's ``sigma_bar_t``; ``sigma_y`` the constraint's ``noise_std``, else the option), the data
step solves

    x0' = argmin_x ||y - A x||^2 + rho_t ||x - x0||^2
        = V [ (s y_u + rho_t x0_bar) / (s^2 + rho_t) ]   on s > 0, V x0_bar elsewhere     (A = U S V^T)

and the update re-noises it with the mixing ``zeta``:

    eps'   = (x_t - alpha_t x0') / sigma_t
    x_prev = alpha_prev x0' + sigma_prev (sqrt(1 - zeta) eps' + sqrt(zeta) z)

Cost per step: 1 NFE, 0 NBE; no solver. Constraints with a closed-form SVD (`svd_of`; the
paper's FFT solve for deblurring is not here); pixel and latent models.

Peers: deepinv's ``deepinv.sampling.DiffPIR`` solves ``argmin ||A u - y||^2 + 2 rho_t ||u - x0||^2``
in ``[0, 1]`` units with ``sigma_y`` in those units, so its ``lambda`` is twice this ``lam``; it
clamps ``x0`` to ``[-1, 1]``, walks its own times (``999 - floor(sqrt(linspace(0, 1000^2, N)))``,
ending at ``t = 0``, not at a clean sample) and starts from ``2 A^T y - 1`` plus noise. With those
matched (``python -m cd_deepinv.parity``) the two agree to 2e-5 on real digits at 100 steps.
azula's ``DiffPIRDenoiser`` is another algorithm (a proximal correction of ``x0`` inside a DDIM
step with weight ``lambda / rho_t``, ``rho_t = sigma_t^2 / alpha_t^2``, solved by GMRES, no
``zeta`` mixing) and is not compared.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> out = cd.recipes.get("diffpir", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool(out.final_residual < 0.1 * out.residuals[0, 0]), out.nfe, out.nbe
    (True, 10, 0)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult
from constrained_diffusion.sampling.corrections.operators import noise_level, svd_of
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep


class DiffPIRConfig(BaseModel):
    """Options of `DiffPIR`.

    Attributes:
        lam: ``lambda`` of ``rho_t`` (paper: 7 for deblurring; ``> 0``).
        zeta: the share of fresh noise in the update, in ``[0, 1]``.
        noise_std: ``sigma_y`` when the constraint has none (``> 0``).
    """

    model_config = ConfigDict(extra="forbid")
    lam: float = Field(7.0, gt=0.0)
    zeta: float = Field(0.3, ge=0.0, le=1.0)
    noise_std: float = Field(0.05, gt=0.0)


@register_correction("diffpir")
class DiffPIR(Correction):
    """The proximal data step on ``x0_hat``, then the ``zeta``-mixed update (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = DiffPIRConfig
    uses_solver = False
    moves_x_t = False
    lam: float
    zeta: float
    noise_std: float

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One DiffPIR step; refuses a constraint without a closed-form SVD."""
        op = svd_of(step.constraint, "DiffPIR")
        x_t, x0 = step.evaluate(x_t)
        x0 = x0.detach()
        alpha, sigma = step.now
        sigma_y = noise_level(step.constraint, self.noise_std)
        rho = self.lam * sigma_y**2 * alpha**2 / sigma**2
        x_bar = op.to_spectral(x0)
        s = op.singular_values(x_bar).to(x_bar)
        y_u = op.y_u().to(x_bar)
        prox = torch.where(s > 0, (s * y_u + rho * x_bar) / (s**2 + rho), x_bar) if rho > 0 else \
            torch.where(s > 0, op.y_bar(x_bar), x_bar)
        x0p = op.from_spectral(prox)
        eps = (x_t - alpha * x0p) / sigma
        x_prev = step.mixed_update(x0p, eps, self.zeta)
        rows = torch.stack([step.constraint.residual(x0).float(), step.constraint.residual(x0p).float()])
        return CorrectionResult(x_prev.detach(), x0p.detach(), rows)
