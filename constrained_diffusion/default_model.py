"""The demo's problems on the embedded models, which need no download.

* ``"mnist"`` (the default): the shipped MNIST DDPM fills in the missing top half of a real test
  digit that ships with the package; the shipped classifier reads the result.
* ``"gaussian"``: the analytic `GaussianDenoiser` on ``1 x 32 x 32`` images with a smooth
  prior fills in a centred box (25% of the pixels) of an image drawn from that prior; its
  ``x0_hat`` and Jacobian are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.gaussian import GaussianDenoiser
from constrained_diffusion.denoisers.schedules import VPSchedule

DemoModel = Literal["mnist", "gaussian"]


@dataclass
class DemoProblem:
    """An inpainting problem: the model, the true image ``(1, C, H, W)``, the mask (1 = known)."""

    denoiser: Denoiser
    truth: Tensor
    mask: Tensor
    description: str
    label: int | None = None


def default_denoiser() -> GaussianDenoiser:
    """The analytic model: a smooth Gaussian prior, DDPM linear betas, 1000 training steps."""
    return GaussianDenoiser.smooth((1, 32, 32), length_scale=4.0, variance=0.25, jitter=1e-4, schedule=VPSchedule.linear())


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
        from constrained_diffusion.denoisers.mnist import MNISTDenoiser

        digits, labels = demo_digits()
        i = seed % digits.shape[0]
        mask = torch.ones(1, 1, 32, 32)
        mask[..., :16, :] = 0
        return DemoProblem(MNISTDenoiser.pretrained("ddpm"), digits[i:i + 1], mask,
                           f"the top half of a real test digit ({int(labels[i])}), MNIST DDPM", int(labels[i]))
    if model == "gaussian":
        den = default_denoiser()
        truth = den.sample_prior(1, torch.Generator().manual_seed(seed))
        return DemoProblem(den, truth, centre_box_mask(den.sample_shape), "a centred box (25%) of a 1x32x32 image, analytic Gaussian prior")
    raise ValueError(f"model must be 'mnist' or 'gaussian', got {model!r}")
