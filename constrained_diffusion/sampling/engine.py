"""The one sampler engine: walk the denoiser's time grid, let a correction run each step.

For each point ``t`` of the grid (``TimeGrid``: the times, and ``(alpha, sigma)`` of every
point including the final one):

    if the step is constrained (inside `window`, K > 0):
        x_t, x0, residuals = correction.apply(step, x_t)     # InnerLoop, PostStep, X0Edit, ...
    else:
        x0 = D(x_t, t); x_t = update(x_t, x0)                # DDIM; Euler for rectified flows

The engine knows nothing of any method: the paper's inner loop, the DPS family's post-step
correction, MPGD's ``x0`` edit and FreeDoM's time travel are `Correction` classes in
`constrained_diffusion.sampling.corrections`; the direction is the `Solver`; the step size is
a registered rule. ``ConstrainedSampler(model, solver, **config)`` builds the correction from
the `SamplerConfig` fields; ``ConstrainedSampler(model, solver, correction=MyCorrection())``
uses one given directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor
from tqdm.auto import tqdm

from constrained_diffusion._validation import check_tensor
from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import TimeGrid
from constrained_diffusion.sampling.adaptive import AdaptiveStop
from constrained_diffusion.sampling.config import CORRECTION_FIELDS, SamplerConfig
from constrained_diffusion.sampling.corrections import Correction, CorrectionSpec
from constrained_diffusion.sampling.noise import Generator, randn
from constrained_diffusion.sampling.result import SampleResult, StepInfo
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.solvers import registry
from constrained_diffusion.solvers.base import Solver
from constrained_diffusion.utils.renamed import rename_keys

__all__ = ["ConstrainedSampler", "randn"]

SolverLike = Solver | str | BaseModel | dict[str, Any] | None


class ConstrainedSampler:
    """Compose a denoiser, a solver and a correction into a constrained sampler.

    Args:
        denoiser: the model.
        solver: a `Solver` instance (used as given, registered or not), a registered name
            (``"inexact-newton"``, ``"gradient-descent"``, ...) or a solver config; ``None``:
            ``"inexact-newton"``, or no solver for a correction that calls none.
        steps: denoising steps (``>= 1``).
        inner_steps: constraint iterations per step ``K`` (``>= 0``; default 5).
        step_scale: the step scale ``lambda``: ``(start, end)`` of a linear schedule over the
            inner steps, or a constant (default ``(0.5, 0.1)``). Called ``lr`` before 0.2: the
            old keyword still works, with a `DeprecationWarning`.
        eta: DDIM stochasticity in ``[0, 1]``.
        correction: a `Correction` to use instead of the one the config fields describe; its
            options are its own (passing ``inner_steps``, ``step_scale``, ``target``, ... as well is an
            error). Or a registered correction by configuration: a name, ``{"name": ..., **options}``
            or a `CorrectionSpec` (`SamplerConfig.correction`).
        **options: the other `SamplerConfig` fields: ``step_rule`` (``step_size`` before 0.2), ``target``, ``window``,
            ``time_travel``, ``time_travel_window``, ``residual_tol`` (a number, or ``"discrepancy"``:
            stop at the constraint's noise level), ``discrepancy_tau``, ``min_decrease``,
            ``arnoldi_iterations``.

    Raises:
        pydantic.ValidationError: an invalid ``steps``, ``inner_steps``, ``step_scale``, ``eta`` or
            solver option, naming the field.
        ValueError: a correction that does not fit the solver (e.g. ``step_rule="arnoldi"``
            with a solver whose direction is not ``J e``).

    Examples:
        >>> import constrained_diffusion as cd
        >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
        >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
        >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
        >>> constraint = cd.Inpainting(truth, mask)
        >>> fit = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=10, inner_steps=5)
        >>> free = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=10, inner_steps=0)
        >>> a = fit.sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
        >>> b = free.sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
        >>> bool(a.final_residual < 0.1 * b.final_residual), (a.nfe, b.nfe)
        (True, (110, 10))
    """

    def __init__(self, denoiser: Denoiser, solver: SolverLike = None, steps: int = 20, inner_steps: int | None = None,
                 step_scale: float | tuple[float, float] | None = None, eta: float = 0.0,
                 correction: Correction | CorrectionSpec | dict[str, Any] | str | None = None, **options: Any) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a constrained_diffusion.Denoiser, got {type(denoiser).__name__}")
        options = rename_keys({**options, **({} if step_scale is None else {"step_scale": step_scale})},
                              SamplerConfig.model_fields, "ConstrainedSampler: ")  # lr=, step_size= (before 0.2)
        step_scale = options.pop("step_scale", None)
        if isinstance(correction, (CorrectionSpec, dict, str)):
            options["correction"], correction = correction, None
        if correction is not None:
            _check_correction(correction, inner_steps, step_scale, options)
        fields = {k: v for k, v in {"inner_steps": inner_steps, "step_scale": step_scale}.items() if v is not None}
        if isinstance(solver, Solver):
            fields["solver"] = solver.config
        elif solver is not None:
            fields["solver"] = solver
        elif correction is not None and not correction.uses_solver:
            fields["solver"] = None
        self.config = SamplerConfig(steps=steps, eta=eta, **fields, **options)
        if isinstance(solver, Solver):
            self.solver: Solver | None = solver
        else:
            self.solver = registry.get(self.config.solver) if self.config.solver is not None else None
        self.correction: Correction = correction if correction is not None else self.config.build_correction()
        self.correction.validate(self.solver)
        self.denoiser = denoiser

    @classmethod
    def from_config(cls, denoiser: Denoiser, config: SamplerConfig | dict[str, Any] | str) -> ConstrainedSampler:
        """Build from a `SamplerConfig` (a recipe's ``config``), a mapping, or a JSON/YAML path."""
        if isinstance(config, str):
            config = SamplerConfig.from_file(config)
        elif isinstance(config, dict):
            config = SamplerConfig.model_validate(config)
        options = config.model_dump(exclude={"solver"})
        if options.get("correction") is None:
            options.pop("correction", None)
        if config.target == "x0":
            options.pop("target")
            return cls(denoiser, None, target="x0", **options)
        return cls(denoiser, registry.get(config.solver) if config.solver is not None else None, **options)

    def sample(self, constraint: Constraint | None = None, x_T: Tensor | None = None,
               generator: Generator = None, batch_size: int | None = None, progress: bool = True,
               callback: Callable[[StepInfo], None] | None = None) -> SampleResult:
        """Draw samples that satisfy ``constraint``.

        Args:
            constraint: the constraint on ``x0_hat``; ``None`` samples unconstrained.
            x_T: initial noise ``(B, *sample_shape)``; drawn from ``N(0, I)`` when ``None``.
            generator: a ``torch.Generator`` or one per sample (same seed, same sample). ``None``
                draws from torch's global random state (reproducible only after ``torch.manual_seed``).
            batch_size: number of samples; inferred from ``x_T``, a list of generators or the
                constraint's data when ``None`` (default 1).
            progress: show a progress bar with the step and the mean residual.
            callback: called with a `StepInfo` after each step.

        Returns:
            A `SampleResult`.

        Raises:
            ValueError: shapes of ``x_T`` or the constraint's data that do not fit the
                denoiser, NaN/inf in ``x_T``, disagreeing batch sizes — before any network call.
            FloatingPointError: a NaN or inf appears during sampling (names the step).
        """
        den, cfg = self.denoiser, self.config
        self._check_inputs(constraint, x_T)
        B = _resolve_batch(constraint, x_T, batch_size, generator)
        grid = den.grid(cfg.steps)
        _check_grid(grid.times, grid.alpha, grid.sigma)
        rows = self.correction.residual_rows if constraint is not None else 0
        x_t = x_T.to(den.device, den.dtype) if x_T is not None else randn(B, den.sample_shape, generator, den.device, den.dtype)
        residuals = torch.zeros(cfg.steps, rows, B)
        nfe0, nbe0, start = den.nfe, den.nbe, time.perf_counter()
        x_t, x0 = self._denoise(grid, constraint, x_t, residuals, generator, progress, callback)
        if den.device.type == "cuda":
            torch.cuda.synchronize(den.device)
        seconds = time.perf_counter() - start
        if cfg.output == "last-x0":
            x_t = x0.detach()
        with torch.no_grad():
            images = den.decode(x_t)
            final = constraint.residual(x_t).detach() if constraint is not None else None
        return SampleResult(sample=x_t, images=images, nfe=den.nfe - nfe0, nbe=den.nbe - nbe0,
                            residuals=residuals, final_residual=final, timesteps=grid.times, seconds=seconds)

    def _denoise(self, grid: TimeGrid, constraint: Constraint | None, x_t: Tensor, residuals: Tensor, generator: Generator,
                 progress: bool, callback: Callable[[StepInfo], None] | None) -> tuple[Tensor, Tensor]:
        """Walk ``grid`` from ``x_t``, one `DenoisingStep` per time, filling ``residuals[i]``; the last ``(x_t, x0_hat)``."""
        den, cfg = self.denoiser, self.config
        betas = _single_step_betas(den) if cfg.noise == "one-step-posterior" else None
        if self.solver is not None:
            self.solver.check(den)  # e.g. a finite-difference h below the rounding floor of den.dtype
            self.solver.reset()  # a stateful solver (SecantNewton) starts every run afresh
        bar = tqdm(total=cfg.steps, disable=not progress, desc="sampling", leave=False)
        for i, t in enumerate(grid.times):
            step = DenoisingStep(den, self.solver, constraint, t, grid.point(i), grid.point(i + 1),  # type: ignore[arg-type]
                                 i, cfg.steps, cfg.eta, generator, noise=cfg.noise,
                                 beta=float(betas[int(t)]) if betas is not None else None)
            x_t, x0 = self._step(step, constraint, x_t, residuals[i])
            # host synchronisation 2 of the step's 2 (the first: the residual rows' copy in `_step`); on a GPU each waits
            # for the step's queued kernels, so the engine synchronises twice per denoising step and the inner loop never
            if not bool(x_t.isfinite().all()):
                raise FloatingPointError(f"non-finite values in the sample at step {i} (t={float(t):g}); "
                                         "check the constraint's error and the step scale (step_scale)")
            if constraint is not None:
                bar.set_postfix(residual=f"{float(residuals[i, -1].mean()):.4g}")
            bar.update(1)
            if callback is not None:
                callback(StepInfo(step=i, t=t, x_t=x_t, x0=x0, residual=residuals[i, -1] if constraint is not None else None))
        bar.close()
        return x_t, x0

    def _step(self, step: DenoisingStep, constraint: Constraint | None, x_t: Tensor, row: Tensor) -> tuple[Tensor, Tensor]:
        """One grid step: the correction inside `window`, else the plain update; fills ``row``."""
        if constraint is not None and self.correction.inner_steps > 0 and self.config.constrained_at(step.index):
            out = self.correction.apply(step, x_t)
            # host synchronisation 1 of the step's 2 (the other: the finiteness check in `sample`); the inner loop makes none
            row[:] = out.residuals.detach().float().cpu()
            return out.x_prev, out.x0
        x_t, x0 = step.evaluate(x_t)
        if constraint is not None:
            row[:] = constraint.residual(x0).detach().float().cpu()
        return step.update(x_t, x0).detach(), x0.detach()

    def _check_inputs(self, constraint: Constraint | None, x_T: Tensor | None) -> None:
        shape = self.denoiser.sample_shape
        if constraint is not None:
            if not isinstance(constraint, Constraint):
                raise TypeError(f"constraint must be a constrained_diffusion.Constraint, got {type(constraint).__name__}")
            constraint.validate(shape)
            stop = getattr(self.correction, "stop", None)  # InnerLoop's (also through TimeTravel)
            if isinstance(stop, AdaptiveStop):
                stop.check(constraint)  # residual_tol="discrepancy" needs the constraint's noise_std
        if x_T is not None:
            check_tensor("x_T", x_T, min_ndim=1)
            if tuple(x_T.shape[1:]) != shape:
                raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected (B, {', '.join(map(str, shape))})")


def _single_step_betas(denoiser: Denoiser) -> Tensor:
    """``(T,)`` single-step ``beta_t = 1 - abar_t / abar_{t-1}`` of a variance-preserving schedule.

    Raises:
        ValueError: the denoiser's schedule has no betas (a flow), so ``noise="one-step-posterior"``
            does not apply.
    """
    betas = getattr(denoiser.schedule, "betas", None)
    if not isinstance(betas, Tensor):
        raise ValueError(f"noise='one-step-posterior' needs a variance-preserving schedule with single-step betas; "
                         f"{type(denoiser.schedule).__name__} has none (use noise='ddim')")
    return betas


def _check_grid(times: Tensor, alpha: Tensor, sigma: Tensor) -> None:
    """Every sampling time needs ``sigma > 0`` and ``alpha >= 0`` (the final point may be clean)."""
    bad = ~((sigma[:-1] > 0) & (alpha[:-1] >= 0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"timestep {i} (t={float(times[i])}) has alpha={float(alpha[i])}, sigma={float(sigma[i])}; "
                         "the grid needs sigma > 0")


def _check_correction(correction: Correction, inner_steps: int | None, step_scale: object, options: dict[str, Any]) -> None:
    if not isinstance(correction, Correction):
        raise TypeError(f"correction must be a constrained_diffusion.sampling.Correction, got {type(correction).__name__}")
    given = [k for k, v in (("inner_steps", inner_steps), ("step_scale", step_scale)) if v is not None]
    given += [k for k in options if k in CORRECTION_FIELDS]
    if given:
        raise ValueError(f"{', '.join(given)}: options of the correction; with correction= pass them to "
                         f"{type(correction).__name__}(...) instead")


def _resolve_batch(constraint: Constraint | None, x_T: Tensor | None, batch_size: int | None, generator: Generator) -> int:
    """The batch size all inputs agree on (1 when none fixes it)."""
    candidates = {"batch_size": batch_size}
    if x_T is not None:
        candidates["x_T"] = int(x_T.shape[0])
    if isinstance(generator, Sequence):
        candidates["generator"] = len(generator)
    if constraint is not None and constraint.batch_size is not None:
        candidates["constraint"] = constraint.batch_size
    given = {k: v for k, v in candidates.items() if v is not None}
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    empty = [k for k, v in given.items() if v == 0]
    if empty:
        raise ValueError("empty batch: " + ", ".join(f"{k} has 0 samples" for k in empty) + "; sampling needs at least one sample")
    if len(set(given.values())) > 1:
        raise ValueError("batch sizes disagree: " + ", ".join(f"{k} has {v}" for k, v in given.items()))
    return next(iter(given.values()), 1)
