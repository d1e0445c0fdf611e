r"""RePaint: inpainting by replacing the known region with the forward-noised observation.

Lugmayr, Danelljan, Romero, Yu, Timofte & Van Gool, *RePaint: Inpainting using Denoising
Diffusion Probabilistic Models*, CVPR 2022 (Algorithm 1). For `Inpainting` with mask ``m`` and
known image ``y``, at each step (fresh ``z ~ N(0, I)``):

    x_known   = alpha_prev y + sigma_prev z                       # q(x_prev | y)
    x_unknown = update(x_t, D(x_t, t))                            # DDIM / DDPM step
    x_prev    = m * x_known + (1 - m) * x_unknown

RePaint's resampling (re-noise ``x_prev`` back to ``t`` and repeat, ``U`` times) is the
`TimeTravel` wrapper, with jump length 1: the ``repaint`` recipe is
``{name: time-travel, inner: {name: repaint}, repeats: U - 1}``.

Cost per step: ``1`` NFE (times ``U`` with resampling), 0 NBE; no solver. Inpainting only
(pixel models, and latent models through latent-mask inpainting); other constraints are refused.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> out = cd.recipes.get("repaint", steps=10).sampler(model).sample(
    ...     cd.Inpainting(truth, mask), generator=torch.Generator().manual_seed(0), progress=False)
    >>> float(out.final_residual) < 1e-5, out.nfe
    (True, 46)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.noise import randn
from constrained_diffusion.sampling.step import DenoisingStep


class RePaintConfig(BaseModel):
    """`RePaint` has no options of its own (resampling: `TimeTravel`; stochasticity: the sampler's ``eta``)."""

    model_config = ConfigDict(extra="forbid")


@register_correction("repaint")
class RePaint(Correction):
    """Known region from ``q(x_prev | y)``, unknown region from the model (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = RePaintConfig
    uses_solver = False
    moves_x_t = False

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One RePaint step; refuses a constraint that is not `Inpainting`."""
        c = step.constraint
        if not isinstance(c, Inpainting):
            raise TypeError(f"RePaint needs an Inpainting constraint (a mask and known pixels), got {type(c).__name__}")
        x_t, x0 = step.evaluate(x_t)
        a, b = step.prev
        z = randn(x_t.shape[0], tuple(x_t.shape[1:]), step.generator, x_t.device, x_t.dtype) if b > 0 else torch.zeros_like(x_t)
        m = c.mask.to(x_t)
        known = a * c.image.to(x_t) + b * z
        x_prev = m * known + (1 - m) * step.update(x_t, x0)
        x0_fit = m * c.image.to(x0) + (1 - m) * x0.detach()
        rows = torch.stack([c.residual(x0.detach()).float(), c.residual(x0_fit).float()])
        return CorrectionResult(x_prev.detach(), x0_fit.detach(), rows)
