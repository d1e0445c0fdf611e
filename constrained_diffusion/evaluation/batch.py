"""One method on one batch under the evaluation harness's seeding rule: `sample_batch` and what it returns (`BatchRun`).

The initial noise of image ``id`` comes from ``image_seed(seed, id, "noise")`` (or, by
``compare``'s rule, from its held-out position: `noise_generators`) and the sampler's
per-step noise from ``"steps"`` (`constrained_diffusion.evaluation.image_tasks.image_seed`),
so an image's sample does not depend on the batch it is in (up to the network's batched
kernels). Used by `constrained_diffusion.evaluation.harness.Evaluation`, ``constrained-diffusion
tune`` and the demo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from constrained_diffusion.errors import UsageError
from constrained_diffusion.evaluation.image_tasks import generators, noise_generators
from constrained_diffusion.recipes import Recipe


@dataclass
class BatchRun:
    """What `sample_batch` returns for a batch of ``B`` images.

    Attributes:
        outputs: the samples ``(B, C, H, W)``, float32 on the CPU, clamped to ``[-1, 1]``.
        result: the sampler's `SampleResult` (NFE, NBE, residual history).
        residual: the final residual per image ``(B,)`` (float32, CPU), ``None`` if not tracked.
        seconds: wall-clock seconds of the whole batch.
        peak_mb: peak memory of the run (`PeakMemory`).
    """

    outputs: torch.Tensor
    result: Any
    residual: torch.Tensor | None
    seconds: float
    peak_mb: float


def sample_batch(denoiser: Any, recipe: Recipe, constraint: Any, ids: list[str], seed: int, device: str,
                 callback: Callable[[Any], None] | None = None, noise_seeding: str = "image-id") -> BatchRun:
    """Run ``recipe`` on one batch under the harness's seeding rule (the module docstring).

    Args:
        denoiser: the model, already conditioned (a prompt bound) where it takes text.
        recipe: the method.
        constraint: the pixel-space constraint of the batch (`make_problem`); the recipe
            adapts it to latent models.
        ids: the images' ids, one per sample.
        seed: the run seed.
        device: where to sample.
        callback: called with the sampler's `StepInfo` after each denoising step (the harness's
            progress bar moves per step with it).
        noise_seeding: how the initial noise is seeded (`noise_generators`): by the image's id
            (the harness's rule) or by its held-out position (``compare``'s).

    Raises:
        UsageError: the method cannot take this task's constraint.
    """
    from constrained_diffusion.metrics.memory import PeakMemory
    from constrained_diffusion.sampling import randn

    x_T = randn(len(ids), denoiser.sample_shape, noise_generators(seed, ids, noise_seeding), torch.device(device), denoiser.dtype)
    sampler = recipe.sampler(denoiser)
    try:
        adapted = recipe.constraint(constraint, sampler.denoiser)
    except TypeError as exc:  # the method cannot take this task's constraint (a user's choice, not a bug)
        raise UsageError(f"--method {recipe.name} with this --task: {exc}") from None
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        result = sampler.sample(adapted, x_T=x_T, generator=generators(seed, ids, "steps"), progress=False,
                                callback=callback)
    seconds = time.perf_counter() - start
    residual = result.final_residual.float().cpu() if result.final_residual is not None else None
    return BatchRun(result.images.float().cpu().clamp(-1, 1), result, residual, seconds, peak.megabytes)
