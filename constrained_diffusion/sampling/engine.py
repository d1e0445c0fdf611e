"""The one sampler engine: constraint iterations inside a DDIM / Euler loop.

Graikos, Jojic & Samaras, *Fast constrained sampling in pre-trained diffusion models*,
NeurIPS 2025, Algorithm 1. For each ``t`` of the denoiser's grid:

    x0 = D(x_t, t)
    for k in 0 .. K-1:                       # lambda_k = linspace(lr[0], lr[1], K)[k]
        e  = constraint.error(x0)            # direction in x0-space
        d  = solver.direction(D, x_t, t, e, x0)
        x_t = x_t + lambda_k d / max|d|      # per sample; zero e or d leaves it unchanged
        x0 = D(x_t, t)
    x_t = ddim_update(x_t, x0, t -> t_prev)  # Euler step for rectified flows

Costs are minimal: ``x0`` keeps an autograd graph only when the solver needs one and the
solver reuses that evaluation, so a step costs ``1 + 2K`` forwards with
`InexactNewton` and ``1 + K`` forwards plus ``K`` backwards with
`GradientDescent`.

The baselines run on the same loop through `SamplerConfig` hooks: the step-size rule
(``lambda / max|d|`` above is the ``"dynamic"`` one), what the correction edits (``target``:
``x_t`` as above; ``x0``: move ``x0`` along ``e`` and step with the unedited noise estimate,
MPGD; ``x_prev``: add the correction computed at ``x_t`` after the DDIM step, DPS/PSLD/FreeDoM),
a ``window`` of constrained steps, FreeDoM's time travel (re-noise ``x_prev`` to ``t`` and
repeat the step) and the adaptive inner loop (``residual_tol``, ``min_decrease``).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel
from torch import Tensor
from tqdm.auto import tqdm

from constrained_diffusion._validation import check_tensor
from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.sampling.config import SamplerConfig
from constrained_diffusion.sampling.result import SampleResult, StepInfo
from constrained_diffusion.sampling.step_size import largest_eigenvalue, per_sample, step_factor
from constrained_diffusion.sampling.update import ddim_update, renoise
from constrained_diffusion.solvers import registry
from constrained_diffusion.solvers.base import Solver
from constrained_diffusion.solvers.inexact_newton import InexactNewton

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn(batch: int, shape: tuple[int, ...], generator: Generator, device: torch.device,
          dtype: torch.dtype) -> Tensor:
    """``N(0, I)`` noise of shape ``(batch, *shape)``.

    With a list of generators, sample ``i`` comes from ``generator[i]``, so a batch equals the
    same samples drawn one at a time. Noise is drawn on the generator's device and moved.
    """
    if isinstance(generator, Sequence):
        if len(generator) != batch:
            raise ValueError(f"generator is a list of {len(generator)} generators but the batch size is {batch}")
        return torch.cat([randn(1, shape, g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.randn((batch, *shape), generator=generator, device=gen_device, dtype=dtype).to(device)


class ConstrainedSampler:
    """Compose a denoiser and a solver into a constrained sampler.

    Args:
        denoiser: the model.
        solver: a `Solver`, a registered name (``"inexact-newton"``,
            ``"gradient-descent"``, ``"exact-jvp"``) or a solver config.
        steps: denoising steps (``>= 1``).
        inner_steps: constraint iterations per step ``K`` (``>= 0``).
        lr: ``(start, end)`` of the linear step-size schedule over inner steps, or a constant.
        eta: DDIM stochasticity in ``[0, 1]``.
        **options: the other `SamplerConfig` fields: ``step_size``, ``target``,
            ``window``, ``time_travel``, ``time_travel_window``, ``residual_tol``,
            ``min_decrease``, ``arnoldi_iterations``.

    Raises:
        pydantic.ValidationError: an invalid ``steps``, ``inner_steps``, ``lr``, ``eta`` or
            solver option, naming the field.

    Example:
        >>> import constrained_diffusion as cd
        >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
        >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
        >>> mask = torch.zeros(1, 1, 8, 8); mask[..., :4] = 1
        >>> sampler = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=10)
        >>> result = sampler.sample(cd.Inpainting(truth, mask), progress=False)
        >>> bool(result.final_residual < 0.05)
        True
    """

    def __init__(self, denoiser: Denoiser, solver: Solver | str | BaseModel | dict[str, Any] = "inexact-newton",
                 steps: int = 20, inner_steps: int = 5, lr: float | tuple[float, float] = (0.5, 0.1),
                 eta: float = 0.0, **options: Any) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a constrained_diffusion.Denoiser, got {type(denoiser).__name__}")
        if isinstance(solver, Solver):
            solver_config: Any = getattr(solver, "config", {"name": solver.name})
            self.solver = solver
        else:
            solver_config = solver
            self.solver = registry.get(registry.parse_config(solver))
        self.config = SamplerConfig(steps=steps, inner_steps=inner_steps, lr=lr, eta=eta, solver=solver_config, **options)
        self.denoiser = denoiser

    @classmethod
    def from_config(cls, denoiser: Denoiser, config: SamplerConfig | dict[str, Any] | str) -> "ConstrainedSampler":
        """Build from a `SamplerConfig` (a recipe's ``config``), a mapping, or a JSON/YAML path."""
        if isinstance(config, str):
            config = SamplerConfig.from_file(config)
        elif isinstance(config, dict):
            config = SamplerConfig.model_validate(config)
        options = config.model_dump(exclude={"solver"})
        return cls(denoiser, registry.get(config.solver), **options)

    # ----------------------------------------------------------------------------------------
    def _resolve_batch(self, constraint: Constraint | None, x_T: Tensor | None, batch_size: int | None,
                       generator: Generator) -> int:
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
        if len(set(given.values())) > 1:
            raise ValueError("batch sizes disagree: " + ", ".join(f"{k} has {v}" for k, v in given.items()))
        return next(iter(given.values()), 1)

    def _evaluate(self, x_t: Tensor, t: Tensor, graph: bool) -> tuple[Tensor, Tensor]:
        """``(x_t, D(x_t, t))``; with ``graph`` ``x_t`` is a fresh leaf and ``x0`` keeps a graph."""
        if not graph:
            with torch.no_grad():
                return x_t, self.denoiser(x_t, t)
        with torch.enable_grad(), self.solver.evaluation_context():
            leaf = x_t.detach().requires_grad_(True)
            return leaf, self.denoiser(leaf, t)

    def _update(self, x_t: Tensor, x0: Tensor, now: tuple[float, float], prev: tuple[float, float],
                generator: Generator, eps: Tensor | None = None) -> Tensor:
        """The DDIM / Euler step ``x_t -> x_prev`` (noise drawn only when ``eta > 0``)."""
        (alpha, sigma), (alpha_prev, sigma_prev) = now, prev
        eta = self.config.eta
        noise = randn(x_t.shape[0], tuple(x_t.shape[1:]), generator, x_t.device, x_t.dtype) if eta > 0 and sigma_prev > 0 else None
        return ddim_update(x_t.detach(), x0.detach(), alpha, sigma, alpha_prev, sigma_prev, eta, noise, eps=eps)

    def _spectral_radius(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """``(B,)`` largest ``|eigenvalue|`` of ``J`` at ``x_t`` (finite-difference Arnoldi)."""
        probe = InexactNewton(h=getattr(self.solver, "h", InexactNewton().h))
        start = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32).to(x_t)
        x_t, x0 = x_t.detach(), x0.detach()
        return largest_eigenvalue(lambda v: probe.direction(self.denoiser, x_t, t, v, x0), start, self.config.arnoldi_iterations)

    def _step(self, constraint: Constraint | None, x_t: Tensor, t: Tensor, now: tuple[float, float],
              prev: tuple[float, float], generator: Generator, row: Tensor) -> tuple[Tensor, Tensor]:
        """One denoising step with its constraint iterations; fills ``row`` ``(K+1, B)``.

        Returns ``(x_prev, x0)``: the next state and the step's final ``x0_hat`` (detached).
        """
        cfg, den, solver = self.config, self.denoiser, self.solver
        K = cfg.inner_steps if constraint is not None else 0
        target = cfg.target
        graph = solver.requires_graph and K > 0 and target != "x0"
        x_t, x0 = self._evaluate(x_t, t, graph=graph)
        if constraint is None:
            return self._update(x_t, x0, now, prev, generator), x0.detach()
        lrs = cfg.step_sizes()
        mu = self._spectral_radius(x_t, t, x0) if cfg.step_size == "arnoldi" else None

        def factor(k: int, d: Tensor, residual: Tensor, x_cur: Tensor, x0_cur: Tensor) -> Tensor:
            update = None
            if cfg.step_size == "norm-ratio":
                (alpha, sigma), (alpha_prev, sigma_prev) = now, prev
                update = ddim_update(x_cur.detach(), x0_cur.detach(), alpha, sigma, alpha_prev, sigma_prev) - x_cur.detach()
            return step_factor(cfg.step_size, lrs[k], d, residual=residual, update=update, mu=mu)

        if target == "x_prev":  # DPS: x_prev = DDIM(x_t, x0) + s * d(x_t)
            e, residual = constraint.error_and_residual(x0.detach())
            row[:] = residual.detach().float().cpu()
            d = solver.direction(den, x_t, t, e.detach(), x0)
            x_prev = self._update(x_t, x0, now, prev, generator) + factor(0, d, residual, x_t, x0) * d.detach()
            return x_prev.detach(), x0.detach()

        if target == "x0":  # MPGD: edit x0 along e, keep the network's noise estimate
            alpha, sigma = now
            eps = (x_t.detach() - alpha * x0.detach()) / sigma
            x0 = x0.detach()
            for k in range(K):
                e, residual = constraint.error_and_residual(x0)
                row[k] = residual.detach().float().cpu()
                x0 = (x0 + factor(k, e.detach(), residual, x_t, x0) * e.detach()).detach()
            row[K] = constraint.residual(x0).detach().float().cpu()
            return self._update(x_t, x0, now, prev, generator, eps=eps), x0

        # the paper: x_t <- x_t + s * d, x0 <- D(x_t), K times
        adaptive = cfg.adaptive
        B = x_t.shape[0]
        stopped = torch.zeros(B, dtype=torch.bool)
        best: tuple[Tensor, Tensor, Tensor] | None = None
        for k in range(K + 1):
            last = k == K
            if last:
                residual = constraint.residual(x0.detach()).detach()
            else:
                e, residual = constraint.error_and_residual(x0.detach())
                e = e.detach()
            res_cpu = residual.float().cpu()
            row[k] = res_cpu
            if adaptive:
                if best is None:
                    best = (x_t.detach(), x0.detach(), res_cpu)
                else:
                    prev_res = best[2]
                    better = res_cpu < prev_res
                    if cfg.min_decrease is not None:  # not enough progress in this inner step
                        stopped |= ~(res_cpu < prev_res * (1.0 - cfg.min_decrease))
                    keep = per_sample(better.to(x_t.device), x_t.ndim)
                    best = (torch.where(keep, x_t.detach(), best[0]), torch.where(keep, x0.detach(), best[1]),
                            torch.where(better, res_cpu, prev_res))
                row[k] = best[2]  # the residual of the iterate the step will keep
                stopped |= best[2] <= cfg.residual_tol
                if bool(stopped.all()):
                    row[k + 1:] = best[2]
                    break
            if last:
                break
            if not bool((e != 0).any()):  # nothing to correct: x_t and x0 stay as they are
                row[k + 1:] = row[k]
                break
            d = solver.direction(den, x_t, t, e, x0)
            s = factor(k, d, residual, x_t, x0)
            if adaptive:
                s = torch.where(per_sample(stopped.to(s.device), s.ndim), torch.zeros_like(s), s)
            if not bool((s != 0).any()):
                row[k + 1:] = row[k]
                break
            x_t = (x_t.detach() + s * d).detach()
            x_t, x0 = self._evaluate(x_t, t, graph=solver.requires_graph and k < K - 1)
        if adaptive and best is not None:
            x_t, x0 = best[0], best[1]
        return self._update(x_t, x0, now, prev, generator), x0.detach()

    def sample(self, constraint: Constraint | None = None, x_T: Tensor | None = None,
               generator: Generator = None, batch_size: int | None = None, progress: bool = True,
               callback: Callable[[StepInfo], None] | None = None) -> SampleResult:
        """Draw samples that satisfy ``constraint``.

        Args:
            constraint: the constraint on ``x0_hat``; ``None`` samples unconstrained.
            x_T: initial noise ``(B, *sample_shape)``; drawn from ``N(0, I)`` when ``None``.
            generator: a ``torch.Generator`` or one per sample (same seed, same sample).
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
        shape = den.sample_shape
        if constraint is not None:
            if not isinstance(constraint, Constraint):
                raise TypeError(f"constraint must be a constrained_diffusion.Constraint, got {type(constraint).__name__}")
            constraint.validate(shape)
        if x_T is not None:
            check_tensor("x_T", x_T, min_ndim=1)
            if tuple(x_T.shape[1:]) != shape:
                raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected (B, {', '.join(map(str, shape))})")
        B = self._resolve_batch(constraint, x_T, batch_size, generator)
        device, dtype = den.device, den.dtype
        ts = den.timesteps(cfg.steps)
        grid = [tuple(float(v) for v in den.alpha_sigma(t)) for t in ts] + [tuple(float(v) for v in den.final_alpha_sigma())]
        for i, (alpha, sigma) in enumerate(grid[:-1]):
            if not sigma > 0 or not alpha >= 0:
                raise ValueError(f"timestep {i} (t={float(ts[i])}) has alpha={alpha}, sigma={sigma}; the grid needs sigma > 0")

        K = cfg.inner_steps if constraint is not None else 0
        x_t = (x_T.to(device, dtype) if x_T is not None else randn(B, shape, generator, device, dtype))
        residuals = torch.zeros(cfg.steps, K + 1 if constraint is not None else 0, B)
        nfe0, nbe0 = den.nfe, den.nbe
        start = time.perf_counter()

        bar = tqdm(total=cfg.steps, disable=not progress, desc="sampling", leave=False)
        for i, t in enumerate(ts):
            (alpha, sigma), (alpha_prev, sigma_prev) = grid[i], grid[i + 1]
            active = constraint is not None and K > 0 and cfg.constrained_at(i)
            repeats = 1 + (cfg.time_travel if active and cfg.travels_at(i) and alpha_prev > 0 and sigma_prev > 0 else 0)
            for r in range(repeats):
                if r > 0:  # time travel: back from t_prev to t along the forward process
                    x_t = renoise(x_t, alpha, sigma, alpha_prev, sigma_prev, randn(B, shape, generator, device, dtype))
                x_t, x0 = self._step(constraint if active else None, x_t, t, grid[i], grid[i + 1], generator, residuals[i])
            if constraint is not None and not active:
                residuals[i] = constraint.residual(x0).detach().float().cpu()
            if not bool(x_t.isfinite().all()):
                raise FloatingPointError(
                    f"non-finite values in the sample at step {i} (t={float(t):g}); "
                    "check the constraint's error and the step sizes (lr)"
                )
            if constraint is not None:
                bar.set_postfix(residual=f"{float(residuals[i, -1].mean()):.4g}")
            bar.update(1)
            if callback is not None:
                callback(StepInfo(step=i, t=t, x_t=x_t, x0=x0, residual=residuals[i, -1] if constraint is not None else None))
        bar.close()

        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            images = den.decode(x_t)
            final = constraint.residual(x_t).detach() if constraint is not None else None
        return SampleResult(sample=x_t, images=images, nfe=den.nfe - nfe0, nbe=den.nbe - nbe0,
                            residuals=residuals, final_residual=final, timesteps=ts, seconds=seconds)
