"""The demo's problems on the embedded models, which need no download.

* ``"mnist"`` (the default): the shipped MNIST DDPM fills in the missing top half of a real test
  digit that ships with the package; the shipped classifier reads the result.
* ``"gaussian"``: the analytic `GaussianDenoiser` on ``1 x 32 x 32`` images with a smooth
  prior fills in a centred box (25% of the pixels) of an image drawn from that prior; its
  ``x0_hat`` and Jacobian are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.models.loading import default_denoiser, load

if TYPE_CHECKING:
    from constrained_diffusion.sampling.result import SampleResult

DemoModel = Literal["mnist", "gaussian"]

__all__ = ["DemoModel", "DemoProblem", "centre_box_mask", "default_denoiser", "demo_problem", "solve_demo"]


@dataclass
class DemoProblem:
    """An inpainting problem: the model, the true image ``(1, C, H, W)``, the mask (1 = known)."""

    denoiser: Denoiser
    truth: Tensor
    mask: Tensor
    description: str
    label: int | None = None


def centre_box_mask(shape: tuple[int, ...], fraction: float = 0.25) -> Tensor:
    """``(1, 1, H, W)`` mask, 1 = known, with a centred hole covering ``fraction`` of the pixels."""
    H, W = shape[-2:]
    h, w = round(H * fraction**0.5), round(W * fraction**0.5)
    mask = torch.ones(1, 1, H, W)
    mask[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w] = 0
    return mask


def demo_problem(model: DemoModel = "mnist", seed: int = 0) -> DemoProblem:
    """The demo's problem for ``model``; ``seed`` picks the digit (mnist) or the image (gaussian)."""
    if model == "mnist":
        from constrained_diffusion.data.mnist import demo_digits

        digits, labels = demo_digits()
        i = seed % digits.shape[0]
        mask = torch.ones(1, 1, 32, 32)
        mask[..., :16, :] = 0
        return DemoProblem(load("mnist-ddpm"), digits[i:i + 1], mask,
                           f"the top half of a real test digit ({int(labels[i])}), MNIST DDPM", int(labels[i]))
    if model == "gaussian":
        den = default_denoiser()
        truth = den.sample_prior(1, torch.Generator().manual_seed(seed))
        return DemoProblem(den, truth, centre_box_mask(den.sample_shape), "a centred box (25%) of a 1x32x32 image, analytic Gaussian prior")
    raise ValueError(f"model must be 'mnist' or 'gaussian', got {model!r}")


def solve_demo(problem: DemoProblem, solvers: Sequence[str], steps: int = 20, inner_steps: int = 5, seed: int = 0,
               progress: bool = False) -> dict[str, SampleResult]:
    """Inpaint ``problem`` without a constraint and with each solver, all from the same noise.

    Args:
        problem: the model, the true image and the mask (see `demo_problem`).
        solvers: registered solver names.
        steps: denoising steps of every run.
        inner_steps: constraint iterations per step of each solver run.
        seed: the initial noise is drawn with seed ``seed + 1``.
        progress: show a progress bar per run.

    Returns:
        ``"none"`` (unconstrained: the same sampler with no inner steps) and then each solver,
        in order, mapped to its `SampleResult`.
    """
    from constrained_diffusion.constraints.inpainting import Inpainting
    from constrained_diffusion.sampling.engine import ConstrainedSampler, randn

    model = problem.denoiser
    constraint = Inpainting(problem.truth, problem.mask)
    x_T = randn(1, model.sample_shape, torch.Generator().manual_seed(seed + 1), model.device, model.dtype)
    results: dict[str, SampleResult] = {}
    for name, inner in [("none", 0), *((s, inner_steps) for s in solvers)]:
        sampler = ConstrainedSampler(model, "inexact-newton" if name == "none" else name, steps=steps, inner_steps=inner)
        results[name] = sampler.sample(constraint, x_T=x_T, progress=progress)
    return results
