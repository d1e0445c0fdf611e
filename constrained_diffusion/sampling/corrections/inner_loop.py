"""The paper's correction: an inner loop on ``x_t`` before each update.

Graikos, Jojic & Samaras, *Fast constrained sampling in pre-trained diffusion models*,
NeurIPS 2025, Algorithm 1. At time ``t``, from ``x0 = D(x_t, t)``:

    for k in 0 .. K-1:                       # lambda_k = linspace(step_scale[0], step_scale[1], K)[k]
        e   = constraint.error(x0)           # direction in x0-space
        d   = solver.direction(D, x_t, t, e, x0)
        x_t = x_t + s_k d                    # s_k from the step-size rule, per sample
        x0  = D(x_t, t)
    x_prev = update(x_t, x0)                 # DDIM; the Euler step for rectified flows

A step costs ``1 + K`` forwards plus the solver's own (``K`` more for `InexactNewton`); the
last re-evaluation keeps an autograd graph only when the solver needs one. With an
`AdaptiveStop` each sample stops on its own criterion.

Host synchronisation. Everything in the loop is per sample and stays on the device: a sample
whose error is zero gets the factor ``s = 0`` (a mask, ``torch.where``), and a sample with
``s = 0`` keeps its ``x_t`` bit for bit. The residual history is a list of device tensors that
the engine copies to the host once, after the denoising step. Ending the loop early when *every*
sample has zero error or zero factor needs a host read (``bool((e != 0).any())``), which on an
accelerator waits for the whole queue of kernels; so it is done only where it is free or
needed (`InnerLoopConfig.host_checks`): on the CPU, and with an `AdaptiveStop` (whose
decisions are host reads anyway). On a GPU without a stop the loop instead does the masked
work: the same result, and at most ``K`` extra forwards in the degenerate case that every
sample's error is exactly zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from constrained_diffusion.linalg.reductions import per_sample
from constrained_diffusion.sampling.adaptive import AdaptiveRun, AdaptiveStop
from constrained_diffusion.sampling.corrections.base import Correction, CorrectionConfig, CorrectionResult, step_sizes
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.sampling.step_size import StepContext, factor_of

PAPER_STEP_SCHEDULE: tuple[float, float] = (0.5, 0.1)
"""The paper's ``lambda`` schedule, ``(start, end)``: ``lambda_k = linspace(0.5, 0.1, K)[k]`` (Algorithm 1).
The one place it is written: `InnerLoopConfig`, `SamplerConfig` and the paper's recipes take it from here."""


class InnerLoopConfig(CorrectionConfig):
    """Options of `InnerLoop` (see `CorrectionConfig`).

    Attributes:
        arnoldi_iterations: Arnoldi steps (JVPs) per denoising step for ``step_rule="arnoldi"``.
        stop: an `AdaptiveStop`, or ``None`` for the full ``K`` iterations.
        host_checks: whether the loop may read device values on the host to end early when
            every sample's error or step factor is zero. ``None`` (default): only where the
            read is free or needed, i.e. on the CPU or with a `stop`; ``False``: never (no
            host synchronisation inside the loop without a `stop`; the skipped samples still
            stay where they are, by masks); ``True``: always.
    """

    inner_steps: int = Field(5, ge=0)
    step_scale: float | tuple[float, float] = PAPER_STEP_SCHEDULE
    step_rule: str = "dynamic"
    arnoldi_iterations: int = Field(10, ge=1)
    stop: AdaptiveStop | None = None
    host_checks: bool | None = None


@register_correction("inner-loop")
class InnerLoop(Correction):
    """``K`` solver steps on ``x_t`` with re-evaluation, then the update (the paper's method).

    Examples:
        >>> InnerLoop(inner_steps=3, step_scale=(1.0, 0.0)).step_sizes()
        [1.0, 0.5, 0.0]
    """

    Config: ClassVar[type[BaseModel]] = InnerLoopConfig
    step_scale: float | tuple[float, float]
    step_rule: str
    arnoldi_iterations: int
    stop: AdaptiveStop | None
    host_checks: bool | None

    def step_sizes(self) -> list[float]:
        """``lambda_k`` for ``k = 0 .. K - 1``."""
        return step_sizes(self.step_scale, self.inner_steps)

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """Run the inner loop at ``step`` from ``x_t``; see the module docstring."""
        K = self.inner_steps
        graph = step.needs_graph
        x_t, x0 = step.evaluate(x_t, graph=graph and K > 0)
        mu = _once(lambda: step.spectral_radius(x_t, x0, self.arnoldi_iterations))
        run = self.stop.start(step.constraint) if self.stop is not None else None
        sync = self.reads_host(x_t.device)
        lrs, rule, rows = self.step_sizes(), self.rule, []
        for k in range(K + 1):
            if k == K:
                residual = step.constraint.residual(x0.detach()).detach()
            else:
                e, residual = step.constraint.error_and_residual(x0.detach())
                e = e.detach()
            rows.append(residual.float() if run is None else run.observe(x_t, x0, residual.float()))
            if k == K or (run is not None and run.done) or (sync and not bool((e != 0).any())):
                break
            d = step.direction(x_t, e, x0)
            ctx = StepContext(lrs[k], d, residual=residual, mu=mu,
                              update=lambda x_t=x_t, x0=x0: step.unguided_update(x_t, x0))
            s = _frozen(run, _unless_zero(e, factor_of(rule, ctx)))
            if sync and not bool((s != 0).any()):
                break
            x_t, x0 = step.evaluate(_moved(x_t, s, d), graph=graph and k < K - 1)
        if run is not None:
            x_t, x0 = run.kept()
        rows += [rows[-1]] * (K + 1 - len(rows))  # an early end repeats the last residual
        return CorrectionResult(step.update(x_t, x0), x0.detach(), _stack(rows))

    def reads_host(self, device: torch.device) -> bool:
        """Whether the loop ends early by host reads on ``device`` (see ``host_checks``)."""
        if self.host_checks is not None:
            return self.host_checks
        return self.stop is not None or device.type == "cpu"


def _unless_zero(e: Tensor, s: Tensor) -> Tensor:
    """``s`` ``(B, 1, ..., 1)`` with the factor of every sample whose error ``e`` is zero set to 0."""
    active = per_sample((e != 0).flatten(1).any(dim=1).to(s.device), s.ndim)
    return torch.where(active, s, torch.zeros_like(s))


def _moved(x_t: Tensor, s: Tensor, d: Tensor) -> Tensor:
    """``x_t + s d`` per sample, ``x_t`` itself (bit for bit) where ``s = 0``; detached."""
    x_t = x_t.detach()
    return torch.where(s != 0, x_t + s * d, x_t).detach()


def _once(compute: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """A zero-argument callable that computes on its first call and then returns the cache."""
    cache: list[Tensor] = []

    def get() -> Tensor:
        if not cache:
            cache.append(compute())
        return cache[0]

    return get


def _frozen(run: AdaptiveRun | None, s: Tensor) -> Tensor:
    return s if run is None else run.freeze(s)


def _stack(rows: list[Tensor]) -> Tensor:
    return torch.stack([r.to(rows[0].device) for r in rows])
