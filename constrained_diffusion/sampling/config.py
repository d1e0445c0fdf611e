"""Sampler configuration: a pydantic model that loads from JSON or YAML.

Example (YAML):

    steps: 20
    inner_steps: 5
    lr: [0.5, 0.1]
    eta: 0.0
    solver: {name: inexact-newton, h: 0.005}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from constrained_diffusion.solvers import registry
from constrained_diffusion.sampling.step_size import StepSizeRule
from constrained_diffusion.solvers.inexact_newton import InexactNewtonConfig

Target = Literal["x_t", "x0", "x_prev"]


class SamplerConfig(BaseModel):
    """Everything `ConstrainedSampler` needs besides the model.

    Attributes:
        steps: number of denoising steps (``>= 1``).
        inner_steps: constraint iterations per step (``>= 0``; 0 is plain DDIM sampling).
        lr: step size ``lambda``: a pair ``(start, end)`` interpolated linearly over the inner
            steps, or one constant; each value ``>= 0``.
        eta: DDIM stochasticity in ``[0, 1]`` (0: deterministic).
        solver: the solver's configuration; ``{"name": ..., **options}``.
        step_size: how ``lambda`` turns into a step along the direction ``d`` (see
            `constrained_diffusion.sampling.step_size`): ``"dynamic"`` (the paper's
            ``lambda / ||d||_inf``), ``"constant"``, ``"residual"`` (DPS), ``"norm-ratio"``
            (FreeDoM) or ``"arnoldi"`` (``lambda / mu_max^2``).
        arnoldi_iterations: Arnoldi steps (JVPs) per denoising step for ``"arnoldi"``.
        target: what the correction edits. ``"x_t"`` (the paper): move ``x_t``, re-evaluate
            ``x0_hat``, repeat ``inner_steps`` times, then take the DDIM step. ``"x0"`` (MPGD):
            move ``x0_hat`` along the constraint's error ``e`` itself (no denoiser Jacobian, no
            extra network call), then take the DDIM step with the edited ``x0_hat`` and the
            unedited noise estimate. ``"x_prev"`` (DPS, PSLD, FreeDoM): take the DDIM step,
            then add the correction computed at ``x_t`` (one per step, no re-evaluation).
        window: ``(start, end)``, fractions of the run (0 = the first, noisiest step): step
            ``i`` is constrained iff ``start <= i / steps < end``.
        time_travel: FreeDoM's "time travel": in the steps of `time_travel_window`, the
            guided step ``x_t -> x_prev`` is repeated this many extra times, re-noising
            ``x_prev`` back to ``t`` in between.
        time_travel_window: ``(start, end)`` fractions of the run where time travel happens.
        residual_tol: adaptive inner loop (``target="x_t"``): a sample's inner iterations
            stop once its residual is ``<= residual_tol`` (``0``: never); the step's loop ends
            when every sample has stopped (a stopped sample is frozen).
        min_decrease: adaptive inner loop (``target="x_t"``): a sample stops once an inner
            step reduced its residual by less than this fraction (``None``: never). With
            either adaptive option each sample keeps its lowest-residual iterate of the step,
            and the recorded residuals are those of the kept iterates.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1)
    inner_steps: int = Field(5, ge=0)
    lr: float | tuple[float, float] = (0.5, 0.1)
    eta: float = Field(0.0, ge=0.0, le=1.0)
    solver: SerializeAsAny[BaseModel] = Field(default_factory=InexactNewtonConfig)
    step_size: StepSizeRule = "dynamic"
    arnoldi_iterations: int = Field(10, ge=1)
    target: Target = "x_t"
    window: tuple[float, float] = (0.0, 1.0)
    time_travel: int = Field(0, ge=0)
    time_travel_window: tuple[float, float] = (0.0, 1.0)
    residual_tol: float = Field(0.0, ge=0.0)
    min_decrease: float | None = Field(None, ge=0.0, le=1.0)

    @field_validator("window", "time_travel_window")
    @classmethod
    def _fractions(cls, value: tuple[float, float]) -> tuple[float, float]:
        start, end = value
        if not 0.0 <= start < end <= 1.0:
            raise ValueError(f"must be (start, end) with 0 <= start < end <= 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "SamplerConfig":
        if self.target == "x_prev" and self.inner_steps > 1:
            raise ValueError(
                f"target='x_prev' applies one correction per step (DPS-style); inner_steps must be 0 or 1, got {self.inner_steps}"
            )
        if self.target == "x0" and self.step_size == "arnoldi":
            raise ValueError("step_size='arnoldi' estimates the denoiser Jacobian's spectrum; target='x0' never uses it")
        if self.adaptive and self.target != "x_t":
            raise ValueError(f"residual_tol / min_decrease stop the inner loop of target='x_t'; target={self.target!r} has none")
        solver = getattr(self.solver, "name", None)
        if self.step_size == "arnoldi" and solver not in ("inexact-newton", "exact-jvp"):
            raise ValueError(
                f"step_size='arnoldi' scales a step along d = J e by 1 / mu_max^2; solver {solver!r} has another direction "
                "(use 'inexact-newton' or 'exact-jvp', or another step_size)"
            )
        return self

    @property
    def adaptive(self) -> bool:
        """Whether the inner loop may stop early (`residual_tol` > 0 or `min_decrease` set)."""
        return self.residual_tol > 0 or self.min_decrease is not None

    def constrained_at(self, step: int) -> bool:
        """Whether step ``step`` (0-based) lies in `window`."""
        f = step / self.steps
        return self.window[0] <= f < self.window[1]

    def travels_at(self, step: int) -> bool:
        """Whether step ``step`` lies in `time_travel_window` (and time travel is on)."""
        f = step / self.steps
        return self.time_travel > 0 and self.time_travel_window[0] <= f < self.time_travel_window[1]

    @field_validator("lr")
    @classmethod
    def _lr_non_negative(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        values = value if isinstance(value, tuple) else (value,)
        if any(not v >= 0 or v == float("inf") for v in values):
            raise ValueError(f"every step size must be finite and >= 0, got {value!r}")
        return value

    @field_validator("solver", mode="before")
    @classmethod
    def _parse_solver(cls, value: Any) -> BaseModel:
        return registry.parse_config(value)

    def step_sizes(self) -> list[float]:
        """``lambda_k`` for ``k = 0 .. inner_steps - 1`` (``linspace(start, end, inner_steps)``)."""
        n = self.inner_steps
        if isinstance(self.lr, tuple):
            start, end = self.lr
            return [start + (end - start) * k / (n - 1) if n > 1 else start for k in range(n)]
        return [float(self.lr)] * n

    @classmethod
    def from_file(cls, path: str | Path) -> "SamplerConfig":
        """Load from a ``.json``, ``.yaml`` or ``.yml`` file."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"config file must end in .json, .yaml or .yml, got {path.name!r}")
        return cls.model_validate(data)
