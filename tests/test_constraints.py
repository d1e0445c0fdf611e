"""Nonlinear constraints and latent-space denoisers with a codec."""

from __future__ import annotations

import pytest
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
        fit = cd.ConstrainedSampler(gaussian, solver, steps=20, inner_steps=10, step_scale=(0.05, 0.005)).sample(c, x_T=x_T, progress=False)
        assert float(fit.final_residual.max()) < 0.01 * float(free.final_residual.mean())


class Upsample2x:
    """A toy codec: latents (1, 4, 4) <-> pixels (1, 8, 8) by nearest up-sampling / average pooling."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


def test_latent_denoiser_decodes_images(gaussian4):
    g = gaussian4
    latent = cd.NetworkDenoiser(lambda x, t: g.predict_x0(x, t), g.schedule, (1, 4, 4), prediction="sample",
                                space="latent", codec=Upsample2x())
    assert isinstance(latent.codec, cd.denoisers.Codec)
    y = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    x_T = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    r = cd.ConstrainedSampler(latent, steps=5, inner_steps=3).sample(cd.Inpainting(y, torch.ones_like(y)), x_T=x_T, progress=False)
    assert r.sample.shape == (1, 1, 4, 4) and r.images.shape == (1, 1, 8, 8)
    assert torch.equal(r.images, Upsample2x().decode(r.sample))


class InvertibleCodec:
    """decode(z) = nearest-upsample(M z) (channel mix), encode = M^-1 avg-pool: encode(decode(z)) = z."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.M = torch.eye(2, dtype=torch.float64) + 0.3 * torch.randn(2, 2, generator=g, dtype=torch.float64)
        self.Minv = torch.linalg.inv(self.M)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("ij,bjhw->bihw", self.M.to(z), z)
        return x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", self.Minv.to(x), torch.nn.functional.avg_pool2d(x, 2))


@pytest.mark.parametrize("kind", ["decoded", "encoded"])
def test_pixel_constraints_on_a_latent_model_with_an_exact_codec(kind):
    import constrained_diffusion.constraints as C

    prior = cd.GaussianDenoiser.smooth((2, 4, 4), length_scale=1.5, dtype=torch.float64)  # two latent channels, as the codec needs
    codec = InvertibleCodec()
    latent = cd.NetworkDenoiser(lambda x, t: prior.predict_x0(x, t), prior.schedule, (2, 4, 4), prediction="sample",
                                space="latent", codec=codec)
    truth = codec.decode(prior.sample_prior(1, torch.Generator().manual_seed(1)))
    mask = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    mask[..., :, 4:] = 0
    pixel = cd.Inpainting(truth, mask)
    constraint = (C.DecodedConstraint if kind == "decoded" else C.EncodedConstraint)(pixel, codec)
    x_T = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    free = cd.ConstrainedSampler(latent, steps=20, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(latent, steps=20, inner_steps=10, step_scale=(0.3, 0.01)).sample(constraint, x_T=x_T, progress=False)
    assert float(fit.final_residual) < 0.1 * float(free.final_residual)
    assert torch.allclose(fit.images, codec.decode(fit.sample))
