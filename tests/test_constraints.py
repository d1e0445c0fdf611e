"""Nonlinear constraints and latent-space denoisers with a codec."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd


class MeanBrightness(cd.NonlinearConstraint):
    """loss = (mean(x) - target)^2 per sample."""

    def __init__(self, target: float) -> None:
        self.target = target

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).mean(dim=1) - self.target) ** 2


@given(seed=st.integers(0, 1000))
def test_nonlinear_error_is_negative_gradient(seed):
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = MeanBrightness(0.3)
    e, r = c.error_and_residual(x)
    expected = -2 * (x.flatten(1).mean(1) - 0.3)[:, None, None, None] / 16 * torch.ones_like(x)
    assert torch.allclose(e, expected) and torch.allclose(r, c.loss(x))
    assert torch.autograd.gradcheck(lambda z: c.loss(z), (x.clone().requires_grad_(True),))


def test_nonlinear_constraint_is_satisfied_by_sampling(gaussian):
    c = MeanBrightness(0.3)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    free = cd.ConstrainedSampler(gaussian, steps=20, inner_steps=0).sample(c, x_T=x_T, progress=False)
    for solver in ("inexact-newton", "gradient-descent"):
        fit = cd.ConstrainedSampler(gaussian, solver, steps=20, inner_steps=10, lr=(0.05, 0.005)).sample(c, x_T=x_T, progress=False)
        assert float(fit.final_residual.max()) < 0.01 * float(free.final_residual.mean())


class Upsample2x:
    """A toy codec: latents (1, 4, 4) <-> pixels (1, 8, 8) by nearest up-sampling / average pooling."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


def test_latent_denoiser_decodes_images():
    g = cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5, dtype=torch.float64)
    latent = cd.NetworkDenoiser(lambda x, t: g.predict_x0(x, t), g.schedule, (1, 4, 4), prediction="sample",
                                space="latent", codec=Upsample2x())
    assert isinstance(latent.codec, cd.denoisers.Codec)
    y = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    r = cd.ConstrainedSampler(latent, steps=5, inner_steps=3).sample(cd.Inpainting(y, torch.ones_like(y)), x_T=torch.zeros(1, 1, 4, 4, dtype=torch.float64), progress=False)
    assert r.sample.shape == (1, 1, 4, 4) and r.images.shape == (1, 1, 8, 8)
    assert torch.equal(r.images, Upsample2x().decode(r.sample))
