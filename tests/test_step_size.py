"""Step-size rules and the batched Arnoldi estimate behind the "arnoldi" rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.sampling.step_size import STEP_SIZE_RULES, largest_eigenvalue, step_factor


def test_rules_scale_the_direction_as_documented():
    d = torch.tensor([[[[2.0, -4.0]]], [[[0.5, 0.0]]]])
    assert step_factor("dynamic", 0.5, d).flatten().tolist() == pytest.approx([0.125, 1.0])
    assert step_factor("constant", 0.5, d).flatten().tolist() == pytest.approx([0.5, 0.5])
    assert step_factor("residual", 1.0, d, residual=torch.tensor([2.0, 4.0])).flatten().tolist() == pytest.approx([0.5, 0.25])
    update = torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]]])
    ratio = step_factor("norm-ratio", 0.2, d, update=update).flatten()
    assert ratio.tolist() == pytest.approx([0.2 * 5 / 20**0.5, 0.2 * 1 / 0.5])
    assert step_factor("arnoldi", 1.0, d, mu=torch.tensor([2.0, 0.5])).flatten().tolist() == pytest.approx([0.25, 4.0])


def test_zero_direction_or_residual_gives_no_step_not_nan():
    d = torch.zeros(2, 1, 2, 2)
    for rule in STEP_SIZE_RULES:
        s = step_factor(rule, 0.5, d, residual=torch.zeros(2), update=torch.zeros(2, 1, 2, 2), mu=torch.zeros(2))
        assert s.shape == (2, 1, 1, 1) and bool(torch.isfinite(s).all())
        assert rule == "constant" or bool((s == 0).all())


def test_missing_inputs_are_named():
    d = torch.ones(1, 1, 2, 2)
    for rule, word in [("residual", "residual"), ("norm-ratio", "update"), ("arnoldi", "mu")]:
        with pytest.raises(ValueError, match=word):
            step_factor(rule, 0.5, d)
    with pytest.raises(ValueError, match="step_rule must be one of"):
        step_factor("newton", 0.5, d)  # type: ignore[arg-type]


@given(seed=st.integers(0, 1000), batch=st.integers(1, 3))
def test_batched_arnoldi_finds_each_samples_largest_eigenvalue(seed, batch):
    g = torch.Generator().manual_seed(seed)
    D = 12
    mats = torch.randn(batch, D, D, generator=g, dtype=torch.float64)
    start = torch.randn(batch, 1, 3, 4, generator=g, dtype=torch.float64)
    matvec = lambda v: torch.einsum("bij,bj->bi", mats, v.flatten(1)).reshape(v.shape)  # noqa: E731
    mu = largest_eigenvalue(matvec, start, n=D)  # a full Krylov space: exact
    expected = torch.linalg.eigvals(mats).abs().amax(dim=1)
    assert torch.allclose(mu, expected, rtol=1e-6)


def test_arnoldi_breaks_down_cleanly_on_an_invariant_space():
    start = torch.zeros(1, 1, 1, 6, dtype=torch.float64)
    start[..., 0] = 1.0  # an eigenvector of the diagonal operator
    diag = torch.arange(1.0, 7.0, dtype=torch.float64)
    mu = largest_eigenvalue(lambda v: v * diag, start, n=5)
    assert float(mu) == pytest.approx(1.0)


def test_arnoldi_rule_estimates_the_analytic_spectrum_and_converges(skewed):
    t = skewed.timesteps(10)[4]
    J = skewed.jacobian(t)
    x_t = torch.randn(1, *skewed.sample_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    step = DenoisingStep(skewed, cd.InexactNewton(), None, t, (1.0, 0.0), (1.0, 0.0), 0, 10, 0.0, None)  # type: ignore[arg-type]
    mu = step.spectral_radius(x_t, skewed(x_t, t), iterations=30)
    assert float(mu) == pytest.approx(float(torch.linalg.eigvals(J).abs().max()), rel=0.02)
    truth = skewed.sample_prior(1, torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., :4] = 1
    pixel = cd.Inpainting(truth, mask)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    free = cd.ConstrainedSampler(skewed, steps=10, inner_steps=0).sample(pixel, generator=gen(), progress=False)
    fit = cd.ConstrainedSampler(skewed, steps=10, inner_steps=5, step_scale=1.0, step_rule="arnoldi", arnoldi_iterations=8).sample(
        pixel, generator=gen(), progress=False)
    assert float(fit.final_residual) < 0.25 * float(free.final_residual)
    assert fit.nfe == 10 * (1 + 8 + 2 * 5)  # Arnoldi: 8 JVPs per step


def test_arnoldi_is_rejected_where_it_does_not_apply():
    with pytest.raises(ValueError, match="arnoldi"):
        cd.SamplerConfig(target="x0", step_rule="arnoldi")
    with pytest.raises(ValueError, match="'gradient-descent' has another direction"):
        cd.SamplerConfig(step_rule="arnoldi", solver="gradient-descent")
