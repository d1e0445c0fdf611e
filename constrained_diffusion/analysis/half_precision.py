"""Inexact Newton end to end in half precision: PSNR of top-half inpainting per dtype.

The shipped MNIST models are cast to each dtype (network weights and samples) and run the
paper's loop (``InexactNewton()`` with the precision-aware step, 20 steps x 5 inner steps) on
the same test digits from the same float32 initial noise (digit ``i`` from seed ``seed + i``,
drawn in float32 and then cast, so every dtype starts from the same point). What changes
between rows is only the arithmetic. Reported: the mean PSNR over the digits and its
difference from float32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from constrained_diffusion.metrics.images import psnr


@dataclass(frozen=True)
class HalfPrecisionRow:
    """One (model, dtype) cell.

    Attributes:
        model: ``"ddpm"`` or ``"flow"``.
        dtype: the dtype of the network and the samples.
        psnr: mean PSNR (dB) over the digits, images clamped to ``[-1, 1]``.
        delta: ``psnr`` minus the float32 row's of the same model.
        digits: how many test digits.
    """

    model: str
    dtype: torch.dtype
    psnr: float
    delta: float
    digits: int


def half_precision_rows(models: Sequence[str] = ("ddpm", "flow"),
                        dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16, torch.float16),
                        limit: int = 50, steps: int = 20, inner_steps: int = 5, seed: int = 0,
                        log: Callable[[str], None] | None = None) -> list[HalfPrecisionRow]:
    """Box-inpainting PSNR of inexact Newton per model and dtype (float32 first, as the reference).

    Args:
        models: shipped MNIST models.
        dtypes: the dtypes compared; float32 is added first if missing.
        limit: first ``limit`` test digits (``>= 1``).
        steps: denoising steps.
        inner_steps: inner steps ``K``.
        seed: digit ``i`` starts from the noise of seed ``seed + i``.
        log: called with one line per finished cell.

    Returns:
        The rows, model by model, float32 first.

    Raises:
        ValueError: ``limit < 1``.
    """
    import constrained_diffusion as cd
    from constrained_diffusion.evaluation.image_tasks import make_problem

    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    images, _ = cd.data.mnist("held-out")
    truth = images[:limit]
    order = [torch.float32, *(d for d in dtypes if d != torch.float32)]
    rows: list[HalfPrecisionRow] = []
    for name in models:
        reference = None
        for dtype in order:
            model = cd.models.load(f"mnist-{name}", dtype=dtype)
            x_T = torch.cat([torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(seed + i))
                             for i in range(limit)])
            sampler = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=steps, inner_steps=inner_steps)
            constraint = make_problem("top-half", truth, [str(i) for i in range(limit)]).constraint
            result = sampler.sample(constraint, x_T=x_T, progress=False)
            value = float(psnr(result.images.float().clamp(-1, 1), truth).mean())
            reference = value if reference is None else reference
            rows.append(HalfPrecisionRow(name, dtype, value, value - reference, limit))
            if log is not None:
                log(f"{name} {str(dtype).removeprefix('torch.')}: PSNR {value:.2f} dB")
    return rows
