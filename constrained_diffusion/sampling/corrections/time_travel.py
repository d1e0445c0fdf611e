"""FreeDoM's time travel as a wrapper around any correction.

Yu et al., *FreeDoM: Training-Free Energy-Guided Conditional Diffusion Model*, ICCV 2023. In
the steps whose fraction ``index / steps`` lies in ``window``, the guided step
``x_t -> x_prev`` is repeated ``repeats`` extra times, each time re-noising ``x_prev`` back to
``t`` first (``x_t ~ q(x_t | x_prev)``). Steps whose next point is clean or pure noise are not
repeated. The residuals are those of the last repetition.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult, check_fractions
from constrained_diffusion.sampling.corrections.registry import build_inner, register_correction
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.solvers.base import Solver


class TimeTravelConfig(BaseModel):
    """Options of `TimeTravel`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    inner: Correction
    repeats: int = Field(1, ge=0)
    window: tuple[float, float] = (0.0, 1.0)

    _window = field_validator("window")(lambda value: check_fractions(value))

    @field_validator("inner", mode="before")
    @classmethod
    def _inner_by_name(cls, value: Any) -> Any:
        return build_inner(value)  # {name: ..., **options} or a name, from a configuration file


@register_correction("time-travel")
class TimeTravel(Correction):
    """Repeat ``inner`` with re-noising in the steps of ``window``.

    Attributes:
        inner: the correction to repeat.
        repeats: extra repetitions per step (``>= 0``).
        window: ``(start, end)`` fractions of the run.

    Examples:
        >>> from constrained_diffusion.sampling.corrections.post_step import PostStep
        >>> TimeTravel(PostStep(), repeats=3, window=(0.3, 0.7)).inner_steps
        1
    """

    Config: ClassVar[type[BaseModel]] = TimeTravelConfig
    inner: Correction
    repeats: int
    window: tuple[float, float]

    @property
    def inner_steps(self) -> int:
        return self.inner.inner_steps

    @property
    def residual_rows(self) -> int:
        return self.inner.residual_rows

    @property
    def uses_solver(self) -> bool:  # type: ignore[override]
        return self.inner.uses_solver

    def validate(self, solver: Solver | None) -> None:
        self.inner.validate(solver)

    def travels_at(self, fraction: float) -> bool:
        """Whether a step at ``fraction`` of the run is repeated."""
        return self.repeats > 0 and self.window[0] <= fraction < self.window[1]

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """``inner`` once, then ``repeats`` more times from the re-noised result where it travels."""
        out = self.inner.apply(step, x_t)
        if self.travels_at(step.fraction) and step.can_renoise:
            for _ in range(self.repeats):
                out = self.inner.apply(step, step.renoise(out.x_prev))
        return out

    def __repr__(self) -> str:
        return f"TimeTravel({self.inner!r}, repeats={self.repeats}, window={self.window})"

    def __getattr__(self, name: str) -> Any:  # options of the wrapped correction (step_scale, step_rule, ...)
        if name in ("inner", "config") or name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.inner, name)
