r"""RED-diff: variational sampling with the denoiser as a regulariser (regularisation by denoising).

Mardani, Song, Kautz & Vahdat, *A Variational Perspective on Solving Inverse Problems with
Diffusion Models*, ICLR 2024 (Algorithm 1). The state is the mean ``mu`` of a variational
posterior; each step draws ``x_t = alpha_t mu + sigma_t eps``, asks the network for its noise
estimate ``eps_hat = (x_t - alpha_t D(x_t, t)) / sigma_t`` and takes one gradient step on

    L(mu) = 0.5 ||y - A mu||^2 + lambda_t sg(eps_hat - eps)^T mu,   lambda_t = lam sigma_t / alpha_t

i.e. ``mu <- mu + step_scale (constraint.error(mu) - lambda_t (eps_hat - eps))`` (the paper uses Adam;
this is plain gradient descent), then moves on to ``t_prev``. In the engine the state passed
between steps is ``x_prev = alpha_prev mu + sigma_prev eps'`` with fresh ``eps'``; the
correction keeps ``mu`` (reset at the first step of every run, ``mu = D(x_T, T)``) and reads
``eps = (x_t - alpha_t mu) / sigma_t`` back from the state.

Cost per step: 1 NFE, 0 NBE: the regulariser's gradient needs no backward through the
network (the stop-gradient ``sg``). No solver. Any constraint; pixel and latent models
(``alpha_t = 0``, a flow's pure-noise point, has no regulariser weight: ``lambda_t`` is clipped).

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> out = cd.recipes.get("red-diff", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool(out.residuals[-1, -1] < out.residuals[0, 0]), out.nfe, out.nbe
    (True, 10, 0)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult, RenamedOptions
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep


class REDDiffConfig(RenamedOptions):
    """Options of `REDDiff`.

    Attributes:
        step_scale: the gradient step on ``mu`` (``> 0``).
        lam: ``lambda``, the regulariser's weight (``>= 0``; ``lambda_t = lam sigma_t / alpha_t``).
        max_weight: the cap on ``sigma_t / alpha_t`` (``> 0``).
    """

    model_config = ConfigDict(extra="forbid")
    step_scale: float = Field(0.5, gt=0.0)
    lam: float = Field(0.25, ge=0.0)
    max_weight: float = Field(10.0, gt=0.0)


@register_correction("red-diff")
class REDDiff(Correction):
    """One variational step on ``mu`` (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = REDDiffConfig
    uses_solver = False
    moves_x_t = False
    step_scale: float
    lam: float
    max_weight: float

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)
        self._mu: Tensor | None = None

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One gradient step on ``mu``, then ``x_prev = alpha_prev mu + sigma_prev eps'``."""
        alpha, sigma = step.now
        x_t, x0 = step.evaluate(x_t)
        x0 = x0.detach()
        mu = self._mu if step.index > 0 and self._mu is not None and self._mu.shape == x0.shape else x0
        eps_hat = (x_t - alpha * x0) / sigma
        eps = (x_t - alpha * mu) / sigma
        weight = self.lam * min(sigma / alpha, self.max_weight) if alpha > 0 else self.lam * self.max_weight
        e, before = step.constraint.error_and_residual(mu)
        mu = (mu + self.step_scale * (e.detach() - weight * (eps_hat - eps))).detach()
        self._mu = mu
        x_prev = step.mixed_update(mu, None, 1.0)
        return CorrectionResult(x_prev.detach(), mu, torch.stack([before.detach().float(), step.constraint.residual(mu).float()]))
