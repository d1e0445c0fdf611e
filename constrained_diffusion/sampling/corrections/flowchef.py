r"""FlowChef: gradient-free steering of a rectified flow in its vector field.

Patel, Wen, Metaxas & Yang, *Steering Rectified Flow Models in the Vector Field for Controlled
Image Generation* (FlowChef), 2024, Algorithm 1. For a rectified flow the denoiser's Jacobian
``d x0_hat / d x_t`` is close to the identity (straight paths), so the error ``e`` of the
constraint at ``x0_hat`` moves ``x_t`` itself, without any network derivative. With
``v = (x_t - x0_hat) / s`` fixed (no re-evaluation), ``k = 0 .. K-1`` and ``lambda_k`` from ``step_scale``:

    e_k     = constraint.error(x0_k)              # -grad_x0 L(x0_k)
    x_t     <- x_t + lambda_k e_k
    x0_k+1  = x0_k + lambda_k e_k                  # J = I
    x_prev  = update(x_t, x0_K)                   # = x_t + (s_prev - s) v  for a flow

In the engine's DDIM form this is ``x_prev = x_prev_plain + (alpha_prev + sigma_prev)
sum_k lambda_k e_k`` (``alpha + sigma = 1`` for a flow). MPGD (`X0Edit`) edits ``x0_hat`` only
and keeps the noise estimate; FlowChef moves both.

Cost per step: 1 NFE, 0 NBE, no solver (the identity Jacobian is the method). Made for
rectified flows (SD3, Flux, the shipped MNIST flow); it runs on diffusion models too, where the
identity is a cruder stand-in. Any constraint (its `error` may backprop through a decoder or
a loss, never through the denoiser).

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
    >>> c = cd.Inpainting(truth, mask)
    >>> out = cd.recipes.get("flowchef", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> bool((out.residuals[:, -1] <= out.residuals[:, 0]).all()), out.nfe, out.nbe
    (True, 10, 0)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionConfig, CorrectionResult, step_sizes
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep


class FlowChefConfig(CorrectionConfig):
    """Options of `FlowChef`: ``inner_steps`` ``K`` and ``step_scale`` (``lambda``, constant or ``(start, end)``); the rule is constant."""

    inner_steps: int = Field(1, ge=0)
    step_scale: float | tuple[float, float] = 0.5
    step_rule: str = "constant"


@register_correction("flowchef")
class FlowChef(Correction):
    """Move ``x_t`` and ``x0_hat`` together along the constraint's error (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = FlowChefConfig
    uses_solver = False
    moves_x_t = False
    step_scale: float | tuple[float, float]
    step_rule: str

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """``K`` identity-Jacobian steps on ``(x_t, x0_hat)``, then the update."""
        x_t, x0 = step.evaluate(x_t)
        x_t, x0, rows = x_t.detach(), x0.detach(), []
        for lam in step_sizes(self.step_scale, self.inner_steps):
            e, residual = step.constraint.error_and_residual(x0)
            rows.append(residual.detach().float())
            x_t, x0 = x_t + lam * e.detach(), x0 + lam * e.detach()
        rows.append(step.constraint.residual(x0).detach().float())
        return CorrectionResult(step.update(x_t, x0).detach(), x0, torch.stack(rows))
