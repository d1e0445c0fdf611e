"""MPGD's correction: edit ``x0_hat`` along the constraint's error, keep the noise estimate.

He et al., *Manifold Preserving Guided Diffusion*, ICLR 2024. From ``x0 = D(x_t, t)`` and its
noise estimate ``eps = (x_t - alpha_t x0) / sigma_t``:

    for k in 0 .. K-1:
        x0 = x0 + s_k constraint.error(x0)   # no denoiser Jacobian, no extra network call
    x_prev = update(x_t, x0, eps)            # DDIM with the edited x0 and the unedited eps

It calls no solver (``uses_solver = False``), and rules that probe the Jacobian do not apply.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionConfig, CorrectionResult, step_sizes
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.sampling.step_size import StepContext, factor_of


@register_correction("x0-edit")
class X0Edit(Correction):
    """``K`` steps on ``x0_hat`` along ``e``, then the update with the unedited noise estimate.

    Examples:
        >>> X0Edit(inner_steps=2, step_scale=0.5).uses_solver
        False
    """

    Config: ClassVar[type[BaseModel]] = CorrectionConfig
    uses_solver = False
    moves_x_t = False
    step_scale: float | tuple[float, float]
    step_rule: str

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """Edit ``x0`` ``K`` times; see the module docstring."""
        x_t, x0 = step.evaluate(x_t)
        alpha, sigma = step.now
        eps = (x_t.detach() - alpha * x0.detach()) / sigma
        x0 = x0.detach()
        rows = []
        for lam in step_sizes(self.step_scale, self.inner_steps):
            e, residual = step.constraint.error_and_residual(x0)
            rows.append(residual.detach().float())
            ctx = StepContext(lam, e.detach(), residual=residual,
                              update=lambda x0=x0: step.unguided_update(x_t, x0))
            x0 = (x0 + factor_of(self.rule, ctx) * e.detach()).detach()
        rows.append(step.constraint.residual(x0).detach().float())
        return CorrectionResult(step.update(x_t, x0, eps=eps), x0, torch.stack(rows))
