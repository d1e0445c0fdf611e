"""The engine: constraint satisfaction, batch equivalence, monotone residual, honest costs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd

SOLVERS = cd.solvers.names()

# Cost of one run of `steps` denoising steps with K inner steps, per registered solver:
# (solver config, forwards, backwards, forwards evaluated with an autograd graph).
# A solver registered without an entry here fails `test_every_solver_has_a_cost_entry`.
COSTS = {
    "inexact-newton": [("inexact-newton", lambda s, k: s * (1 + 2 * k), lambda s, k: 0, lambda s, k: 0)],
    "gradient-descent": [("gradient-descent", lambda s, k: s * (1 + k), lambda s, k: s * k, lambda s, k: s * k)],
    "exact-jvp": [
        ({"name": "exact-jvp", "method": "forward"}, lambda s, k: s * (1 + 2 * k), lambda s, k: 0, lambda s, k: 0),
        ({"name": "exact-jvp", "method": "double-backward"}, lambda s, k: s * (1 + k), lambda s, k: 2 * s * k, lambda s, k: s * k),
    ],
    "exact-newton": [  # GMRES: `iterations` JVPs per inner step (tol=0 runs them all), one forward each
        ({"name": "exact-newton", "iterations": 3, "tol": 0.0}, lambda s, k: s * (1 + 4 * k), lambda s, k: 0, lambda s, k: 0),
    ],
    "identity": [("identity", lambda s, k: s * (1 + k), lambda s, k: 0, lambda s, k: 0)],
    "secant-newton": [  # tol=1: a finite difference only with an empty history (the first inner step of each step, or of the run)
        ({"name": "secant-newton", "tol": 1.0}, lambda s, k: s * (2 + k), lambda s, k: 0, lambda s, k: 0),
        ({"name": "secant-newton", "tol": 1.0, "keep_previous": True}, lambda s, k: 1 + s * (1 + k), lambda s, k: 0, lambda s, k: 0),
    ],
}
COST_CASES = [case for name in SOLVERS for case in COSTS.get(name, [])]


def _inpainting(model: cd.GaussianDenoiser, batch: int = 1, seed: int = 0) -> cd.Inpainting:
    truth = model.sample_prior(batch, torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, 1, *model.sample_shape[1:], dtype=truth.dtype)
    mask[..., : model.sample_shape[-1] // 2] = 1
    return cd.Inpainting(truth, mask)


# How each solver is run to fit the known pixels: the paper's dynamic steps, except exact Newton,
# whose direction J^-1 e is a Newton step and is taken at full length (constant step ~1).
FIT = {"exact-newton": ({"name": "exact-newton", "method": "lstsq"}, {"inner_steps": 10, "step_scale": (1.0, 0.1), "step_rule": "constant"})}


@pytest.mark.parametrize("solver", SOLVERS)
def test_inpainting_matches_known_pixels(solver):
    """Residual <= 1e-3 x the unconstrained run's, from the same noise (float64 Gaussian prior)."""
    # built here: `gaussian` with jitter 1e-6 (a sharper prior) and linspace spacing, the setting the 1e-3 ratio was measured in
    model = cd.GaussianDenoiser.smooth((1, 8, 8), length_scale=2.0, jitter=1e-6,
                                       schedule=cd.VPSchedule.linear(spacing="linspace"), dtype=torch.float64)
    constraint = _inpainting(model, batch=2)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    config, options = FIT.get(solver, (solver, {"inner_steps": 60, "step_scale": (0.1, 1e-6)}))
    free = cd.ConstrainedSampler(model, config, steps=30, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(model, config, steps=30, **options).sample(constraint, x_T=x_T, progress=False)
    ratio = fit.final_residual / free.final_residual
    assert bool((ratio <= 1e-3).all()), ratio


# Batched and single forwards differ by rounding (BLAS picks other kernels); GMRES on finite-difference
# JVPs amplifies that by the conditioning of its Krylov problem (measured: 5e-7 on this prior).
BATCH_ATOL = {"exact-newton": 1e-4}


@pytest.mark.parametrize("solver", SOLVERS)
@given(n=st.integers(2, 4), seed=st.integers(0, 1000), eta=st.sampled_from([0.0, 0.5]))
def test_batch_of_n_equals_n_runs_of_one(gaussian6, solver, n, seed, eta):
    model = gaussian6
    constraint = _inpainting(model, batch=n, seed=seed)
    sampler = cd.ConstrainedSampler(model, solver, steps=4, inner_steps=2, eta=eta)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    batched = sampler.sample(constraint, generator=gens, progress=False)
    for i in range(n):
        single = cd.Inpainting(constraint.image[i : i + 1], constraint.mask)
        one = sampler.sample(single, generator=torch.Generator().manual_seed(seed + i), progress=False)
        atol = BATCH_ATOL.get(solver, 1e-10)
        assert torch.allclose(batched.sample[i], one.sample[0], atol=atol)
        assert torch.allclose(batched.residuals[..., i], one.residuals[..., 0], atol=atol)


@pytest.mark.parametrize("solver", SOLVERS)
@given(seed=st.integers(0, 1000), steps=st.integers(2, 6))
def test_small_step_never_increases_linear_residual(gaussian6, solver, seed, steps):
    """Symmetric PSD J (ideal denoiser): x0 moves by lambda J^2 A^T r / |d|, a descent direction."""
    model = gaussian6
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)
    constraint = cd.SuperResolution(y, 2, kernel="bicubic")
    result = cd.ConstrainedSampler(model, solver, steps=steps, inner_steps=4, step_scale=1e-4).sample(constraint, generator=g, progress=False)
    inner = result.residuals  # (steps, K + 1, B)
    assert bool((inner[:, 1:] <= inner[:, :-1] + 1e-12).all())


def test_every_solver_has_a_cost_entry():
    assert sorted(COSTS) == SOLVERS, "add the new solver's forwards/backwards/graphs per step to COSTS"


@pytest.mark.parametrize("solver,forwards,backwards,graphs", COST_CASES)
def test_costs_are_exact(gaussian, recorder_factory, solver, forwards, backwards, graphs):
    steps, K = 5, 3
    rec = recorder_factory(gaussian)
    constraint = _inpainting(gaussian)
    result = cd.ConstrainedSampler(rec, solver, steps=steps, inner_steps=K).sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
    assert result.nfe == forwards(steps, K)
    assert result.nbe == backwards(steps, K)
    # a graph is built only for an x0 that a graph-needing solver will reuse
    assert sum(rec.grad_enabled) == graphs(steps, K)


def test_zero_error_skips_work(gaussian):
    """Known pixels already matched: no solver call, no update, one forward per step."""
    constraint = cd.Inpainting(torch.zeros(1, 1, 8, 8, dtype=torch.float64), torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    result = cd.ConstrainedSampler(gaussian, "inexact-newton", steps=4, inner_steps=5).sample(constraint, progress=False)
    assert result.nfe == 4
    plain = cd.ConstrainedSampler(gaussian, "inexact-newton", steps=4, inner_steps=0).sample(None, progress=False, generator=torch.Generator().manual_seed(3))
    again = cd.ConstrainedSampler(gaussian, "inexact-newton", steps=4, inner_steps=5).sample(
        constraint, progress=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain.sample, again.sample)


def test_same_seed_same_sample(gaussian):
    sampler = cd.ConstrainedSampler(gaussian, "inexact-newton", steps=5, inner_steps=2, eta=1.0)
    constraint = _inpainting(gaussian)
    a = sampler.sample(constraint, generator=torch.Generator().manual_seed(7), progress=False)
    b = sampler.sample(constraint, generator=torch.Generator().manual_seed(7), progress=False)
    c = sampler.sample(constraint, generator=torch.Generator().manual_seed(8), progress=False)
    assert torch.equal(a.sample, b.sample) and not torch.equal(a.sample, c.sample)


def test_result_fields_and_callback(gaussian):
    seen = []
    constraint = _inpainting(gaussian, batch=2)
    r = cd.ConstrainedSampler(gaussian, "inexact-newton", steps=6, inner_steps=3).sample(constraint, progress=False, callback=seen.append)
    assert r.sample.shape == (2, 1, 8, 8) and torch.equal(r.images, r.sample)
    assert r.residuals.shape == (6, 4, 2) and r.final_residual.shape == (2,)
    assert r.seconds > 0 and r.timesteps.shape == (6,)
    assert [s.step for s in seen] == list(range(6))
    assert torch.allclose(seen[-1].x_t, r.sample)
    # the last x0 is the final sample (the last update moves to alpha = 1, sigma = 0)
    assert torch.allclose(r.final_residual.float(), r.residuals[-1, -1], rtol=1e-5)


def test_unconstrained_sampling_of_gaussian_prior_has_the_prior_statistics():
    """DDIM with the exact denoiser transports N(0, I) to the prior: check mean and variance."""
    model = cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5, variance=0.5, mean=0.3, dtype=torch.float64)  # a nonzero mean to find
    r = cd.ConstrainedSampler(model, steps=50, inner_steps=0).sample(None, batch_size=4000, generator=torch.Generator().manual_seed(0), progress=False)
    x = r.sample.flatten(1)
    assert abs(float(x.mean()) - 0.3) < 0.03
    cov = torch.cov(x.T)
    assert float((cov - model.cov).abs().max()) < 0.06


def test_flow_schedule_runs_the_same_engine():
    """Rectified-flow time grid: the same engine, the DDIM update is the Euler step."""
    model = cd.GaussianDenoiser.smooth((1, 6, 6), length_scale=2.0, schedule=cd.FlowSchedule(), dtype=torch.float64)  # `gaussian6` on the flow grid
    constraint = _inpainting(model)
    x_T = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    free = cd.ConstrainedSampler(model, steps=20, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(model, steps=20, inner_steps=5).sample(constraint, x_T=x_T, progress=False)
    assert float(fit.final_residual) < 0.1 * float(free.final_residual)


def test_batch_size_is_inferred_from_a_list_of_generators(gaussian):
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    r = cd.ConstrainedSampler(gaussian, steps=2, inner_steps=0).sample(None, generator=gens, progress=False)
    assert r.sample.shape[0] == 3
