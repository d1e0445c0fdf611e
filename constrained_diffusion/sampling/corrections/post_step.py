"""The DPS family's correction: update first, then add one step computed at ``x_t``.

Chung et al., *Diffusion Posterior Sampling for General Noisy Inverse Problems*, ICLR 2023
(also PSLD, FreeDoM). From ``x0 = D(x_t, t)`` (with a graph when the solver needs one):

    e, r   = constraint.error_and_residual(x0)
    x_prev = update(x_t, x0) + s * solver.direction(D, x_t, t, e, x0)

one correction per step, no re-evaluation of ``x0_hat``. Every residual entry of the step is
the residual before the correction.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionConfig, CorrectionResult, step_sizes
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.sampling.step_size import StepContext, factor_of


class PostStepConfig(CorrectionConfig):
    """Options of `PostStep`: ``inner_steps`` is 0 (off) or 1; default rule ``"residual"`` (DPS)."""

    inner_steps: int = Field(1, ge=0, le=1, description="target='x_prev' applies one correction per step (DPS-style); "
                                                         "inner_steps must be 0 or 1")
    step_rule: str = "residual"


@register_correction("post-step")
class PostStep(Correction):
    """``x_prev = update(x_t, x0) + s d(x_t)`` (DPS, PSLD, FreeDoM).

    Examples:
        >>> PostStep(step_scale=0.5)
        PostStep(step_scale=0.5, step_rule='residual', inner_steps=1)
    """

    Config: ClassVar[type[BaseModel]] = PostStepConfig
    step_scale: float | tuple[float, float]
    step_rule: str

    def __init__(self, *args: object, **options: object) -> None:
        if "inner_steps" in options and options["inner_steps"] not in (0, 1):
            raise ValueError(f"target='x_prev' applies one correction per step (DPS-style); inner_steps must be 0 or 1, "
                             f"got {options['inner_steps']!r}")
        super().__init__(*args, **options)

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One guided step; see the module docstring."""
        graph = step.needs_graph
        x_t, x0 = step.evaluate(x_t, graph=graph)
        e, residual = step.constraint.error_and_residual(x0.detach())
        d = step.direction(x_t, e.detach(), x0)
        x_prev = step.update(x_t, x0)
        ctx = StepContext(step_sizes(self.step_scale, 1)[0], d, residual=residual,
                          update=lambda: step.unguided_update(x_t, x0))
        x_prev = x_prev + factor_of(self.rule, ctx) * d.detach()
        rows = residual.detach().float().expand(self.residual_rows, -1)
        return CorrectionResult(x_prev.detach(), x0.detach(), rows)
