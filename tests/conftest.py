"""Shared fixtures: small analytic denoisers, the tiny random UNet, and a denoiser that records how it is called."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

import constrained_diffusion as cd

settings.register_profile("default", deadline=None, max_examples=20, derandomize=True)
settings.load_profile("default")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def gaussian() -> cd.GaussianDenoiser:
    """Symmetric (ideal) analytic denoiser on 1x8x8 images, in float64."""
    return cd.GaussianDenoiser.smooth((1, 8, 8), length_scale=2.0, jitter=1e-3, dtype=torch.float64)


@pytest.fixture(scope="session")
def skewed() -> cd.GaussianDenoiser:
    """Non-symmetric analytic denoiser: J = A (I + 0.5 K), K skew-symmetric."""
    return cd.GaussianDenoiser.smooth((1, 8, 8), length_scale=2.0, jitter=1e-3, skew=0.5, dtype=torch.float64)


@pytest.fixture(scope="session")
def gaussian6() -> cd.GaussianDenoiser:
    """Symmetric analytic denoiser on 1x6x6 images, float64 (the sampler's property tests)."""
    return cd.GaussianDenoiser.smooth((1, 6, 6), length_scale=2.0, dtype=torch.float64)


@pytest.fixture(scope="session")
def gaussian4() -> cd.GaussianDenoiser:
    """Symmetric analytic denoiser on 1x4x4 images (D = 16), float64: a dense J is cheap."""
    return cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5, dtype=torch.float64)


@pytest.fixture(scope="session")
def skewed4() -> cd.GaussianDenoiser:
    """Non-symmetric analytic denoiser on 1x4x4 images (D = 16), float64: x0_hat = M_t x_t exactly."""
    return cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5, skew=0.5, dtype=torch.float64)


@pytest.fixture(scope="session")
def gaussian32() -> cd.GaussianDenoiser:
    """``GaussianDenoiser.smooth((1, 8, 8))`` as it comes: its defaults (length_scale 3, jitter 1e-3), float32 (the
    dtype of the networks; the validation, finite-difference-floor and DDRM/DDNM tests)."""
    return cd.GaussianDenoiser.smooth((1, 8, 8))


def tiny_unet(sample_size: int = 8, attention: tuple[int, ...] = (4,)) -> cd.models.UNet:
    """The tiny random UNet of the network tests (8 base channels, two levels, one res block), built after
    ``torch.manual_seed(0)``: the same weights in every test; eval mode, no grad."""
    torch.manual_seed(0)
    net = cd.models.UNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=attention, sample_size=sample_size)
    return net.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_unet_factory():
    """`tiny_unet`: ``factory(sample_size=8, attention=(4,))`` -> a seeded tiny UNet."""
    return tiny_unet


@pytest.fixture
def tiny_mnist() -> cd.MNISTDenoiser:
    """`MNISTDenoiser` (DDPM) over the tiny random UNet on 1x8x8 images."""
    return cd.MNISTDenoiser(tiny_unet(), "ddpm")


class Recorder(cd.Denoiser):
    """Wraps a denoiser; records whether grad was enabled at each call and can inject a NaN."""

    def __init__(self, inner: cd.Denoiser, nan_at_call: int | None = None) -> None:
        super().__init__(inner.sample_shape, codec=inner.codec, schedule=inner.schedule)
        self.inner = inner
        self.grad_enabled: list[bool] = []
        self.nan_at_call = nan_at_call

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.grad_enabled.append(torch.is_grad_enabled() and x_t.requires_grad)
        out = self.inner.predict_x0(x_t, t)
        if self.nan_at_call is not None and len(self.grad_enabled) > self.nan_at_call:
            out = out * float("nan")
        return out


@pytest.fixture
def recorder_factory():
    return Recorder
