r"""DAPS: decoupled annealing posterior sampling.

Zhang, Chu, Berner, Meng, Anandkumar & Song, *Improving Diffusion Inverse Problem Solving with
Decoupled Noise Annealing*, CVPR 2025 (Algorithm 1), with the one-step (Tweedie) estimate of
``x0`` in place of the paper's short ODE solve. At each step, with ``r_t = sigma_t / alpha_t``
(scaled by ``r_scale``), ``x0_hat = D(x_t, t)`` and the measurement level ``sigma_y``
(``noise_std`` of the constraint, else the option):

    x0 <- x0_hat; for n in 0 .. N-1 (Langevin on p(x0 | x_t, y) ~ N(x0; x0_hat, r_t^2) p(y | x0)):
        g   = (x0_hat - x0) / r_t^2 + constraint.error(x0) / sigma_y^2
        x0 <- x0 + gamma g + sqrt(2 gamma) z_n,      gamma = step_scale / (1 / r_t^2 + 1 / sigma_y^2)
    x_prev = alpha_prev x0 + sigma_prev z            # decoupled: fresh noise, no DDIM memory

(``constraint.error`` is ``A^T (y - A x0)`` for a linear constraint, ``-grad loss`` for others;
the step ``gamma`` is preconditioned by the two curvatures so that ``step_scale`` in ``(0, 1]`` is stable
for operators with ``||A|| <= 1``, e.g. masks and averaging down-samplers.)

Cost per step: 1 NFE, 0 NBE (``N`` evaluations of the constraint only); no solver. Any
constraint; pixel and latent models (rectified flows need ``alpha_t > 0``: the pure-noise
point of a flow takes the plain update).

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> out = cd.recipes.get("daps", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool(out.final_residual < 0.2 * out.residuals[0, 0]), out.nfe, out.nbe  # down to about sigma_y sqrt(m)
    (True, 10, 0)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult, RenamedOptions
from constrained_diffusion.sampling.corrections.operators import noise_level
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.noise import randn
from constrained_diffusion.sampling.step import DenoisingStep


class DAPSConfig(RenamedOptions):
    """Options of `DAPS`.

    Attributes:
        langevin_steps: ``N`` Langevin steps per denoising step (``>= 0``).
        step_scale: ``gamma`` relative to the preconditioner, in ``(0, 1]``.
        noise_std: ``sigma_y`` when the constraint has none (``> 0``; the likelihood's width).
        r_scale: ``r_t = r_scale sigma_t / alpha_t``, the width of the prior around ``x0_hat``.
        langevin_noise: add the Langevin noise ``sqrt(2 gamma) z`` (``False``: gradient ascent, MAP-like).
    """

    model_config = ConfigDict(extra="forbid")
    langevin_steps: int = Field(20, ge=0)
    step_scale: float = Field(0.5, gt=0.0, le=1.0)
    noise_std: float = Field(0.05, gt=0.0)
    r_scale: float = Field(1.0, gt=0.0)
    langevin_noise: bool = True


@register_correction("daps")
class DAPS(Correction):
    """Langevin on ``x0`` around ``x0_hat``, then a fresh re-noising to ``t_prev`` (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = DAPSConfig
    uses_solver = False
    moves_x_t = False
    langevin_steps: int
    step_scale: float
    noise_std: float
    r_scale: float
    langevin_noise: bool

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One annealing step: ``N`` Langevin steps on ``x0``, then ``x_prev = alpha_prev x0 + sigma_prev z``."""
        x_t, x0_hat = step.evaluate(x_t)
        x0_hat = x0_hat.detach()
        alpha, sigma = step.now
        before = step.constraint.residual(x0_hat).float()
        if alpha <= 0:  # a flow's pure-noise point: nothing to anneal around
            return CorrectionResult(step.update(x_t, x0_hat).detach(), x0_hat, torch.stack([before, before]))
        sigma_y = noise_level(step.constraint, self.noise_std)
        r2 = (self.r_scale * sigma / alpha) ** 2
        gamma = self.step_scale / (1.0 / r2 + 1.0 / sigma_y**2)
        x0 = x0_hat.clone()
        shape = tuple(x0.shape[1:])
        for _ in range(self.langevin_steps):
            g = (x0_hat - x0) / r2 + step.constraint.error(x0).detach() / sigma_y**2
            x0 = x0 + gamma * g
            if self.langevin_noise:
                x0 = x0 + math.sqrt(2 * gamma) * randn(x0.shape[0], shape, step.generator, x0.device, x0.dtype)
        x_prev = step.mixed_update(x0, None, 1.0)
        return CorrectionResult(x_prev.detach(), x0.detach(), torch.stack([before, step.constraint.residual(x0).float()]))
