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
from constrained_diffusion.sampling.update import ddim_update
from constrained_diffusion.solvers import registry
from constrained_diffusion.solvers.base import Solver, max_abs

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
                 eta: float = 0.0) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a constrained_diffusion.Denoiser, got {type(denoiser).__name__}")
        if isinstance(solver, Solver):
            solver_config: Any = getattr(solver, "config", {"name": solver.name})
            self.solver = solver
        else:
            solver_config = solver
            self.solver = registry.get(registry.parse_config(solver))
        self.config = SamplerConfig(steps=steps, inner_steps=inner_steps, lr=lr, eta=eta, solver=solver_config)
        self.denoiser = denoiser

    @classmethod
    def from_config(cls, denoiser: Denoiser, config: SamplerConfig | dict[str, Any] | str) -> "ConstrainedSampler":
        """Build from a `SamplerConfig`, a mapping, or a path to a JSON/YAML file."""
        if isinstance(config, str):
            config = SamplerConfig.from_file(config)
        elif isinstance(config, dict):
            config = SamplerConfig.model_validate(config)
        return cls(denoiser, registry.get(config.solver), steps=config.steps, inner_steps=config.inner_steps,
                   lr=config.lr, eta=config.eta)

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

        lrs = cfg.step_sizes()
        K = cfg.inner_steps if constraint is not None else 0
        solver = self.solver
        x_t = (x_T.to(device, dtype) if x_T is not None else randn(B, shape, generator, device, dtype))
        residuals = torch.zeros(cfg.steps, K + 1 if constraint is not None else 0, B)
        nfe0, nbe0 = den.nfe, den.nbe
        start = time.perf_counter()

        bar = tqdm(total=cfg.steps, disable=not progress, desc="sampling", leave=False)
        for i, t in enumerate(ts):
            (alpha, sigma), (alpha_prev, sigma_prev) = grid[i], grid[i + 1]
            x_t, x0 = self._evaluate(x_t, t, graph=solver.requires_graph and K > 0)
            for k in range(K):
                assert constraint is not None
                e, residual = constraint.error_and_residual(x0.detach())
                residuals[i, k] = residual.detach().float().cpu()
                e = e.detach()
                if not bool((e != 0).any()):  # nothing to correct: x_t and x0 stay as they are
                    residuals[i, k + 1:] = residuals[i, k]
                    break
                d = solver.direction(den, x_t, t, e, x0)
                scale = max_abs(d)
                if not bool((scale > 0).any()):
                    residuals[i, k + 1:] = residuals[i, k]
                    break
                step = torch.where(scale > 0, lrs[k] / scale.clamp_min(torch.finfo(scale.dtype).tiny), torch.zeros_like(scale))
                x_t = (x_t.detach() + step * d).detach()
                x_t, x0 = self._evaluate(x_t, t, graph=solver.requires_graph and k < K - 1)
            else:
                if constraint is not None:
                    residuals[i, K] = constraint.residual(x0.detach()).detach().float().cpu()
            noise = randn(B, shape, generator, device, dtype) if cfg.eta > 0 and sigma_prev > 0 else None
            x_t = ddim_update(x_t.detach(), x0.detach(), alpha, sigma, alpha_prev, sigma_prev, cfg.eta, noise)
            if not bool(x_t.isfinite().all()):
                raise FloatingPointError(
                    f"non-finite values in the sample at step {i} (t={float(t):g}); "
                    "check the constraint's error and the step sizes (lr)"
                )
            if constraint is not None:
                bar.set_postfix(residual=f"{float(residuals[i, -1].mean()):.4g}")
            bar.update(1)
            if callback is not None:
                callback(StepInfo(step=i, t=t, x_t=x_t, x0=x0.detach(), residual=residuals[i, -1] if constraint is not None else None))
        bar.close()

        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            images = den.decode(x_t)
            final = constraint.residual(x_t).detach() if constraint is not None else None
        return SampleResult(sample=x_t, images=images, nfe=den.nfe - nfe0, nbe=den.nbe - nbe0,
                            residuals=residuals, final_residual=final, timesteps=ts, seconds=seconds)
