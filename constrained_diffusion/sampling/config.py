"""Sampler configuration: a pydantic model that loads from JSON or YAML.

The correction is one nested, discriminated value, ``correction: {name: <registered>,
**options}`` (`CorrectionSpec`; any correction registered with ``@register_correction``,
a user's included). The flat fields ``target``, ``inner_steps``, ``step_scale``, ``step_rule``,
``arnoldi_iterations``, ``time_travel``, ... are a thin convenience for the built-in
corrections, used when ``correction`` is unset; `SamplerConfig.build_correction` builds
the `Correction` either form names, and the correction validates its own options.

Example (YAML), the flat convenience:

    steps: 20
    inner_steps: 5
    step_scale: [0.5, 0.1]
    eta: 0.0
    solver: {name: inexact-newton, h: 0.005}

and the same sampler with the nested form (``target: x_t`` is ``name: inner-loop``,
``x_prev`` is ``post-step``, ``x0`` is ``x0-edit``; time travel wraps one in ``time-travel``):

    steps: 20
    correction: {name: inner-loop, inner_steps: 5, step_scale: [0.5, 0.1], step_rule: dynamic}
    solver: {name: inexact-newton, h: 0.005}

``step_scale`` and ``step_rule`` were called ``lr`` and ``step_size`` before 0.2; the old names
are still accepted, with a `DeprecationWarning` (`constrained_diffusion.utils.renamed`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from constrained_diffusion.sampling.adaptive import AdaptiveStop, ResidualTol, check_discrepancy_tau
from constrained_diffusion.sampling.corrections import Correction, InnerLoop, PostStep, TimeTravel, X0Edit, step_sizes
from constrained_diffusion.sampling.corrections.base import StepOptions, check_fractions
from constrained_diffusion.sampling.corrections.inner_loop import PAPER_STEP_SCHEDULE
from constrained_diffusion.sampling.corrections.registry import CorrectionSpec
from constrained_diffusion.solvers import registry
from constrained_diffusion.solvers.inexact_newton import InexactNewtonConfig
from constrained_diffusion.utils.renamed import rename_keys

Target = Literal["x_t", "x0", "x_prev"]
Noise = Literal["ddim", "one-step-posterior"]
Output = Literal["sample", "last-x0"]
CORRECTION_FIELDS = ("inner_steps", "step_scale", "step_rule", "arnoldi_iterations", "target", "time_travel",
                     "time_travel_window", "residual_tol", "min_decrease", "discrepancy_tau")
"""The fields that describe the correction (not used when a `Correction` is given directly)."""


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors())
    return str(exc)


class SamplerConfig(StepOptions):
    """Everything `ConstrainedSampler` needs besides the model.

    Attributes:
        steps: number of denoising steps (``>= 1``).
        inner_steps: constraint iterations per step (``>= 0``; 0 is plain DDIM sampling).
        step_scale: the step scale ``lambda`` (``lr`` before 0.2): a pair ``(start, end)``
            interpolated linearly over the inner steps, or one constant; each value ``>= 0``.
            The step-size rule (`step_rule`) turns it into each step's factor.
        eta: DDIM stochasticity in ``[0, 1]`` (0: deterministic).
        noise: the noise rule of each update ``x_prev = alpha_prev x0 + sqrt(sigma_prev^2 - c^2)
            eps_hat + c z``: ``"ddim"`` — ``c`` is DDIM's ``sigma_t(eta)``, from the strided
            step ``t -> t_prev``; ``"one-step-posterior"`` — ``c^2 = eta^2 beta_t (1 -
            abar_prev) / (1 - abar_t)`` with ``beta_t`` the schedule's *single-step* beta at
            ``t`` (the paper's reference notebooks, with ``eta = 1``; variance-preserving
            schedules only). ``eta = 0`` is deterministic DDIM under either rule.
        output: what `SampleResult.sample` is: ``"sample"`` — the state after the last update
            (DDIM to the schedule's final point); ``"last-x0"`` — the last step's final
            ``x0_hat`` (the paper's reference notebooks decode it).
        solver: the solver's configuration, ``{"name": ..., **options}``; ``None`` for a
            correction that calls none (``target="x0"``, the default there).
        step_rule: the name of a registered step-size rule (`constrained_diffusion.sampling.step_size`;
            ``step_size`` before 0.2):
            ``"dynamic"`` (the paper's ``lambda / ||d||_inf``), ``"constant"``, ``"residual"``
            (DPS), ``"norm-ratio"`` (FreeDoM), ``"arnoldi"`` (``lambda / mu_max^2``) or a user's.
        arnoldi_iterations: Arnoldi steps (JVPs) per denoising step for ``step_rule="arnoldi"``.
        target: which correction: ``"x_t"`` — `InnerLoop` (the paper): move ``x_t``,
            re-evaluate ``x0_hat``, ``inner_steps`` times, then take the DDIM step; ``"x0"`` —
            `X0Edit` (MPGD): move ``x0_hat`` along the error itself, then step with the
            unedited noise estimate; ``"x_prev"`` — `PostStep` (DPS, PSLD, FreeDoM): take the
            DDIM step, then add the correction computed at ``x_t``.
        window: ``(start, end)``, fractions of the run (0 = the first, noisiest step): step
            ``i`` is constrained iff ``start <= i / steps < end``.
        time_travel: FreeDoM's time travel (`TimeTravel`): in the steps of
            `time_travel_window`, the guided step is repeated this many extra times,
            re-noising ``x_prev`` back to ``t`` in between.
        time_travel_window: ``(start, end)`` fractions of the run where time travel happens;
            must overlap `window`.
        residual_tol: adaptive inner loop (`AdaptiveStop`, ``target="x_t"``): a sample stops
            once its residual is ``<= residual_tol`` (``0``: never); ``"discrepancy"``: once it is
            ``<= discrepancy_tau sigma_y sqrt(m)``, its constraint's discrepancy level
            (Morozov's principle; the constraint must have ``noise_std``, else
            `ConstrainedSampler.sample` raises before any network call).
        min_decrease: adaptive inner loop: a sample stops once an inner step reduced its
            residual by less than this fraction (``None``: never). With either option each
            sample keeps its lowest-residual iterate of the step.
        discrepancy_tau: the factor ``tau > 0`` of the discrepancy level (default 1.0; only
            with ``residual_tol="discrepancy"``).
        correction: the correction as one nested value ``{name: <registered>, **options}``
            (a `CorrectionSpec`, a mapping or a bare name); ``None`` (default): the flat fields
            above describe it. With it set, the flat correction fields (`CORRECTION_FIELDS`)
            must keep their defaults (set ``correction.<option>`` instead), and a correction that
            calls no solver gets ``solver=None``.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1)
    inner_steps: int = Field(5, ge=0)
    step_scale: float | tuple[float, float] = PAPER_STEP_SCHEDULE
    eta: float = Field(0.0, ge=0.0, le=1.0)
    noise: Noise = "ddim"
    output: Output = "sample"
    solver: SerializeAsAny[BaseModel] | None = Field(default_factory=InexactNewtonConfig)
    step_rule: str = "dynamic"
    arnoldi_iterations: int = Field(10, ge=1)
    target: Target = "x_t"
    window: tuple[float, float] = (0.0, 1.0)
    time_travel: int = Field(0, ge=0)
    time_travel_window: tuple[float, float] = (0.0, 1.0)
    residual_tol: ResidualTol = 0.0
    min_decrease: float | None = Field(None, ge=0.0, le=1.0)
    discrepancy_tau: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    correction: CorrectionSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _nested_correction(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = rename_keys(data, cls.model_fields, f"{cls.__name__}: ")
        if data.get("correction") is None:
            return data
        for key in CORRECTION_FIELDS:
            if key in data and _same(data[key]) != _default(key):
                raise ValueError(f"{key}={data[key]!r} is a flat option of the built-in corrections; with correction="
                                 f"{{name: ...}} set correction.{key} instead")
            data.pop(key, None)
        spec = CorrectionSpec.model_validate(data["correction"]) if not isinstance(data["correction"], CorrectionSpec) else data["correction"]
        data["correction"] = spec  # validated (and its options renamed, with one warning) once
        if not spec.cls.uses_solver:
            if data.get("solver") is not None:
                raise ValueError(f"correction {spec.name!r} calls no solver; leave solver unset")
            data["solver"] = None
        return data

    @model_validator(mode="before")
    @classmethod
    def _x0_has_no_solver(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("target") == "x0":
            if data.get("solver") is not None:
                raise ValueError("target='x0' (MPGD) moves x0_hat along the constraint's error and never calls a solver; "
                                 "leave solver unset")
            data = {**data, "solver": None}
        return data

    _windows = field_validator("window", "time_travel_window")(lambda value: check_fractions(value))

    @field_validator("solver", mode="before")
    @classmethod
    def _parse_solver(cls, value: Any) -> BaseModel | None:
        return None if value is None else registry.parse_config(value)

    @model_validator(mode="after")
    def _consistent(self) -> SamplerConfig:
        check_discrepancy_tau(self.residual_tol, self.discrepancy_tau)
        if self.correction is not None:
            return self._nested_fits_solver()
        if self.adaptive and self.target != "x_t":
            raise ValueError(f"residual_tol / min_decrease stop the inner loop of target='x_t'; target={self.target!r} has none")
        if self.time_travel > 0 and not (self.time_travel_window[0] < self.window[1] and self.window[0] < self.time_travel_window[1]):
            raise ValueError(f"time_travel_window={self.time_travel_window} does not overlap window={self.window}: "
                             "time travel would never happen")
        try:
            correction = self.build_correction()
        except (ValidationError, ValueError) as exc:
            raise ValueError(_message(exc)) from None
        name = getattr(self.solver, "name", None)
        if name in registry.names():  # a user's solver or correction is checked by the sampler, with the instance
            correction.validate(registry.solver_class(name))  # type: ignore[arg-type]
        elif self.solver is None and not correction.uses_solver:
            correction.validate(None)
        return self

    def _nested_fits_solver(self) -> SamplerConfig:
        try:
            correction = self.build_correction()
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"correction: {_message(exc)}") from None
        name = getattr(self.solver, "name", None)
        if name in registry.names():
            correction.validate(registry.solver_class(name))  # type: ignore[arg-type]
        elif self.solver is None:
            correction.validate(None)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("correction", 0) is None:  # the flat form dumps (and hashes) exactly as before the nested field
            del data["correction"]
        elif "correction" in data:  # the nested form: the unused flat fields are left out
            for key in CORRECTION_FIELDS:
                data.pop(key, None)
        return data

    @property
    def adaptive(self) -> bool:
        """Whether the inner loop may stop early (`residual_tol` > 0 or ``"discrepancy"``, or `min_decrease` set)."""
        return self.residual_tol == "discrepancy" or self.residual_tol > 0 or self.min_decrease is not None

    def constrained_at(self, step: int) -> bool:
        """Whether step ``step`` (0-based) lies in `window`."""
        f = step / self.steps
        return self.window[0] <= f < self.window[1]

    def step_sizes(self) -> list[float]:
        """``lambda_k`` for ``k = 0 .. inner_steps - 1`` (``linspace(start, end, inner_steps)``)."""
        return step_sizes(self.step_scale, self.inner_steps)

    def build_correction(self) -> Correction:
        """The `Correction` this configuration names: the nested `correction` when set; else the
        one the flat fields describe (`InnerLoop`, `PostStep` or `X0Edit`, wrapped in
        `TimeTravel` when ``time_travel > 0``).

        (Before the nested ``correction`` field this method was called ``correction()``.)
        """
        if self.correction is not None:
            return self.correction.build()
        common = {"inner_steps": self.inner_steps, "step_scale": self.step_scale, "step_rule": self.step_rule}
        correction: Correction
        if self.target == "x_t":
            stop = AdaptiveStop(residual_tol=self.residual_tol, min_decrease=self.min_decrease,
                                discrepancy_tau=self.discrepancy_tau) if self.adaptive else None
            correction = InnerLoop(**common, arnoldi_iterations=self.arnoldi_iterations, stop=stop)
        elif self.target == "x_prev":
            correction = PostStep(**common)
        else:
            correction = X0Edit(**common)
        if self.time_travel > 0:
            correction = TimeTravel(correction, repeats=self.time_travel, window=self.time_travel_window)
        return correction

    @classmethod
    def from_file(cls, path: str | Path) -> SamplerConfig:
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


def _default(key: str) -> Any:
    """The default of `SamplerConfig` field ``key``."""
    return SamplerConfig.model_fields[key].get_default(call_default_factory=True)


def _same(value: Any) -> Any:
    """A YAML/JSON list as the tuple a field's default is."""
    return tuple(value) if isinstance(value, list) else value
