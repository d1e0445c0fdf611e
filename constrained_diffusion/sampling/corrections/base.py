"""The correction role: how a method edits the sampling trajectory within one denoising step.

A `Correction` receives a `DenoisingStep` and the state ``x_t`` and returns the next state
``x_prev``, the step's final ``x0_hat`` and the constraint residuals it saw. The engine only
walks the grid; everything a method does inside a step is its correction:

* `InnerLoop` — the paper: move ``x_t`` along the solver's direction and re-evaluate
  ``x0_hat``, ``K`` times, then take the update;
* `PostStep` — the DPS family: take the update, then add one correction computed at ``x_t``;
* `X0Edit` — MPGD: move ``x0_hat`` along the constraint's error itself, then update with the
  edited ``x0_hat`` and the unedited noise estimate;
* `TimeTravel` — a wrapper that repeats another correction after re-noising (FreeDoM).

A correction owns and validates its options (a pydantic ``Config``, like a solver's).

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> class Nudge(cd.sampling.Correction):
    ...     '''Update, then pull x_prev a fixed fraction of the way along e (no solver).'''
    ...     uses_solver = False
    ...     class Config(cd.sampling.CorrectionConfig):
    ...         inner_steps: int = 1
    ...         step_scale: float = 0.1
    ...     def apply(self, step, x_t):
    ...         x_t, x0 = step.evaluate(x_t)
    ...         e, r = step.constraint.error_and_residual(x0)
    ...         return cd.sampling.CorrectionResult(step.update(x_t, x0) + self.step_scale * e, x0, torch.stack([r, r]))
    >>> model = cd.GaussianDenoiser.smooth((1, 4, 4))
    >>> c = cd.Inpainting(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    >>> result = cd.ConstrainedSampler(model, correction=Nudge(), steps=3).sample(c, progress=False)
    >>> result.residuals.shape
    torch.Size([3, 2, 1])
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.sampling.step_size import StepSizeRule, get_step_size
from constrained_diffusion.solvers.base import Solver
from constrained_diffusion.utils.renamed import RENAMED, deprecated, rename_keys


@dataclass
class CorrectionResult:
    """What a correction returns for one denoising step.

    Attributes:
        x_prev: the next state, ``(B, *sample_shape)``, detached.
        x0: the step's final ``x0_hat``, detached.
        residuals: ``(R, B)`` residuals (``R = residual_rows``): before each inner update and
            after the last, or as the correction documents.
    """

    x_prev: Tensor
    x0: Tensor
    residuals: Tensor


class RenamedOptions(BaseModel):
    """A config that still accepts the option names renamed in 0.2 (``lr`` -> ``step_scale``,
    ``step_size`` -> ``step_rule``; `constrained_diffusion.utils.renamed`), with one
    `DeprecationWarning` each; the old and the new name of one option together are an error.
    Reading ``config.lr`` / ``config.step_size`` also warns and returns the new field.
    """

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return rename_keys(data, cls.model_fields, f"{cls.__name__}: ")
        return data

    def __getattr__(self, name: str) -> Any:  # only reached for a missing attribute: the names renamed in 0.2
        new = RENAMED.get(name)
        if new is not None and new in type(self).model_fields:
            deprecated(f"{type(self).__name__}.{name}", f"{type(self).__name__}.{new}")
            return getattr(self, new)
        return super().__getattr__(name)  # type: ignore[misc]


class StepOptions(RenamedOptions):
    """The step-size options, validated once for `CorrectionConfig` and `SamplerConfig`.

    Attributes:
        step_scale: the step scale ``lambda`` (``lr`` before 0.2): ``(start, end)`` interpolated
            linearly over the inner steps, or one constant; each value finite and ``>= 0``.
        step_rule: the name of a registered step-size rule (`constrained_diffusion.sampling.step_size`;
            ``step_size`` before 0.2), which turns ``lambda`` into each step's factor.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    step_scale: float | tuple[float, float] = 1.0
    step_rule: str = "constant"

    @field_validator("step_scale")
    @classmethod
    def _scale_non_negative(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        values = value if isinstance(value, tuple) else (value,)
        if any(not v >= 0 or v == float("inf") for v in values):
            raise ValueError(f"every step scale must be finite and >= 0, got {value!r}")
        return value

    @field_validator("step_rule")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        get_step_size(value)
        return value


def check_fractions(value: tuple[float, float]) -> tuple[float, float]:
    """A ``(start, end)`` window of fractions of the run, ``0 <= start < end <= 1``, else a ValueError."""
    start, end = value
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"must be (start, end) with 0 <= start < end <= 1, got {value!r}")
    return value


class CorrectionConfig(StepOptions):
    """Options every built-in correction has: those of `StepOptions` and

    Attributes:
        inner_steps: constraint iterations per step ``K`` (``>= 0``; ``0`` switches it off).
    """

    inner_steps: int = Field(1, ge=0)


def step_sizes(step_scale: float | tuple[float, float], n: int) -> list[float]:
    """``lambda_k`` for ``k = 0 .. n - 1``: ``linspace(start, end, n)`` for a pair, else constant.

    Examples:
        >>> step_sizes((1.0, 0.0), 5)
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    if isinstance(step_scale, tuple):
        start, end = step_scale
        return [start + (end - start) * k / (n - 1) if n > 1 else start for k in range(n)]
    return [float(step_scale)] * n


class Correction(Configurable, ABC):
    """Abstract correction; subclasses set ``Config`` and implement `apply`.

    Attributes:
        name: registry name (`constrained_diffusion.sampling.corrections.registry`); defaults to the
            class name in kebab case, ``@register_correction("name")`` sets it.
        uses_solver: whether `apply` asks the solver for a direction (`X0Edit` does not).
        moves_x_t: whether it moves ``x_t`` through the denoiser's Jacobian (step-size rules
            that probe the Jacobian need it).
    """

    name: ClassVar[str] = "correction"
    Config: ClassVar[type[BaseModel]] = CorrectionConfig
    uses_solver: ClassVar[bool] = True
    moves_x_t: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = re.sub(r"(?<!^)(?=[A-Z])", "-", cls.__name__).lower()

    @property
    def inner_steps(self) -> int:
        """``K``: a correction with ``K = 0`` is skipped by the engine (plain sampling)."""
        return int(getattr(self.config, "inner_steps", 1))

    @property
    def residual_rows(self) -> int:
        """``R``: residuals per step in the result's table (``K + 1`` by default)."""
        return self.inner_steps + 1

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **rename_keys(options, self.Config.model_fields, f"{type(self).__name__}: "))

    def __getattr__(self, name: str) -> Any:  # only reached for a missing attribute: the names renamed in 0.2
        new = RENAMED.get(name)
        if new is None or name in type(self).__dict__ or "config" not in self.__dict__ or new not in type(self.config).model_fields:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        deprecated(f"{type(self).__name__}.{name}", f"{type(self).__name__}.{new}")
        return getattr(self.config, new)

    @property
    def rule(self) -> StepSizeRule:
        """The registered step-size rule named by the ``step_rule`` option."""
        return get_step_size(str(getattr(self.config, "step_rule", "constant")))

    def validate(self, solver: Solver | None) -> None:
        """Check that this correction can run with ``solver``, before any network call.

        Raises:
            ValueError: a needed solver is missing, or the step-size rule does not fit the
                solver's ``direction_kind`` or this correction.
        """
        if self.uses_solver and solver is None:
            raise ValueError(f"{type(self).__name__} needs a solver")
        if "step_rule" not in type(self.config).model_fields:
            return
        rule = self.rule
        if rule.needs_jacobian and not self.moves_x_t:
            raise ValueError(f"step_rule={rule.name!r} estimates the denoiser Jacobian's spectrum; "
                             f"{type(self).__name__} never uses it")
        kind = getattr(solver, "direction_kind", None)
        if rule.direction_kinds is not None and self.uses_solver and kind not in rule.direction_kinds:
            raise ValueError(f"step_rule={rule.name!r} is meant for directions of kind {sorted(rule.direction_kinds)}; "
                             f"solver {getattr(solver, 'name', None)!r} has another direction (direction_kind={kind!r}); "
                             "use another solver or another step_rule")

    @abstractmethod
    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """Run the step: ``x_t`` ``(B, *sample_shape)`` to a `CorrectionResult`."""
