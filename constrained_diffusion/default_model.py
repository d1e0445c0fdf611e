"""The embedded default model that the demo runs without any download.

Until the shipped MNIST models exist this is the analytic `GaussianDenoiser` on
``1 x 32 x 32`` images with a smooth (squared-exponential) prior: its ``x0_hat`` and Jacobian
are exact, so the demo shows each solver's behaviour without a trained network.
"""

from __future__ import annotations

from constrained_diffusion.denoisers.gaussian import GaussianDenoiser
from constrained_diffusion.denoisers.schedules import VPSchedule

DEFAULT_SHAPE = (1, 32, 32)


def default_denoiser() -> GaussianDenoiser:
    """The demo's model: a smooth Gaussian prior, DDPM linear betas, 1000 training steps."""
    return GaussianDenoiser.smooth(DEFAULT_SHAPE, length_scale=4.0, variance=0.25, jitter=1e-4,
                                   schedule=VPSchedule.linear())
