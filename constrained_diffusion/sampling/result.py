"""What a sampler run returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class SampleResult:
    """Output of `ConstrainedSampler.sample`.

    Attributes:
        sample: the state after the last update, ``(B, *sample_shape)``, in the denoiser's
            space (a latent for latent models); with ``output="last-x0"`` the last step's final
            ``x0_hat`` instead.
        images: ``sample`` decoded by the denoiser's codec, or ``sample`` itself in pixel space.
        nfe: network forward evaluations (a batched call counts once).
        nbe: backward passes through the network.
        residuals: ``(steps, inner_steps + 1, B)``: the constraint residual of ``x0_hat`` before
            each inner update and after the last one, per step. Empty (``steps x 0 x B``)
            without a constraint. With an adaptive inner loop, the residual of the best
            iterate so far; with ``target="x_prev"`` (DPS-style) every entry of a step is the
            residual before its correction, which is added after the DDIM step without
            re-evaluating ``x0_hat``.
        final_residual: ``(B,)`` residual of ``sample`` itself, or ``None`` without a constraint.
        timesteps: the grid that was walked.
        seconds: wall-clock time of the run.
    """

    sample: Tensor
    images: Tensor
    nfe: int
    nbe: int
    residuals: Tensor
    final_residual: Tensor | None
    timesteps: Tensor
    seconds: float


@dataclass
class StepInfo:
    """Passed to the sampler's ``callback`` after each denoising step.

    Attributes:
        step: index of the step, ``0 .. steps - 1``.
        t: its time.
        x_t: the state after the step's update (the next step's input).
        x0: the step's final ``x0_hat``.
        residual: ``(B,)`` residual of ``x0`` (``None`` without a constraint).
    """

    step: int
    t: Tensor
    x_t: Tensor
    x0: Tensor
    residual: Tensor | None
