"""ExactNewton: d = J^-1 e by GMRES or densely, against the exact Jacobian of the analytic denoiser."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import constrained_diffusion as cd
from constrained_diffusion import analysis

TIMES = st.sampled_from([999, 500, 200, 50, 10])
SEEDS = st.integers(0, 2**16)
D = 16


def _problem(model: cd.GaussianDenoiser, t: int, seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, *model.sample_shape, generator=g, dtype=torch.float64)
    e = torch.randn(batch, *model.sample_shape, generator=g, dtype=torch.float64)
    tt = torch.tensor(t)
    with torch.no_grad():
        x0 = model(x_t, tt)
    return x_t, tt, e, x0, model.jacobian(tt)


def _apply(J: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (v.flatten(1) @ J.T).reshape(v.shape)


def _newton(J: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve(J, e.flatten(1).T).T.reshape(e.shape)


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


@pytest.mark.parametrize("jvp,atol", [("finite-difference", 1e-8), ("forward", 1e-11)])
@settings(max_examples=10)
@given(t=TIMES, seed=SEEDS)
def test_gmres_on_the_whole_krylov_space_is_the_newton_step(skewed4, jvp, atol, t, seed):
    x_t, tt, e, x0, J = _problem(skewed4, t, seed)
    d = cd.ExactNewton(iterations=D, tol=1e-14, jvp=jvp).direction(skewed4, x_t, tt, e, x0)
    assert float(_rel(d, _newton(J, e)).max()) < atol


@given(t=TIMES, seed=SEEDS)
def test_lstsq_is_the_newton_step_and_rcond_the_pseudo_inverse(skewed4, t, seed):
    x_t, tt, e, x0, J = _problem(skewed4, t, seed)
    d = cd.ExactNewton(method="lstsq").direction(skewed4, x_t, tt, e, x0)
    assert float(_rel(d, _newton(J, e)).max()) < 1e-10
    solver = cd.ExactNewton(method="lstsq", rcond=0.05, chunk=5)
    d, info = solver.solve(skewed4, x_t, tt, e, x0)
    pinv = torch.linalg.pinv(J, rtol=0.05)
    assert float(_rel(d, _apply(pinv, e)).max()) < 1e-10
    S = torch.linalg.svdvals(J)
    assert info.iterations.tolist() == [int((S > 0.05 * S[0]).sum())] * 2
    # the pseudo-inverse solution is the least-squares one on the kept singular directions
    assert torch.allclose(info.residual, _rel(_apply(J, d), e), atol=1e-12)


@given(t=TIMES, seed=SEEDS, tol=st.sampled_from([1e-2, 1e-4, 1e-7]))
def test_newton_property_and_reported_residual(skewed4, t, seed, tol):
    """J d = e up to tol, and the reported (GMRES) residual is the true one."""
    x_t, tt, e, x0, J = _problem(skewed4, t, seed)
    d, info = cd.ExactNewton(iterations=D, tol=tol, jvp="forward").solve(skewed4, x_t, tt, e, x0)
    true = _rel(_apply(J, d), e)
    assert bool(info.converged.all())
    assert bool((info.residual <= tol).all())
    assert torch.allclose(true, info.residual, rtol=1e-6, atol=1e-10)


def test_early_stop_uses_fewer_forwards_and_counts_honestly(skewed4):
    x_t, tt, e, x0, _ = _problem(skewed4, 10, 0)  # cond(J) ~ 3: converges well before D
    skewed4.reset_counters()
    d, info = cd.ExactNewton(iterations=D, tol=1e-3).solve(skewed4, x_t, tt, e, x0)
    early = skewed4.nfe
    assert early == info.forwards == int(info.iterations.max()) < D
    assert skewed4.nbe == info.backwards == 0
    skewed4.reset_counters()
    cd.ExactNewton(iterations=D, tol=0.0).direction(skewed4, x_t, tt, e, x0)
    assert (skewed4.nfe, skewed4.nbe) == (D, 0)
    skewed4.reset_counters()
    cd.ExactNewton(method="lstsq", chunk=5).direction(skewed4, x_t, tt, e, x0)
    assert (skewed4.nfe, skewed4.nbe) == (2 * math.ceil(D / 5), 2 * math.ceil(D / 5))  # per sample


@pytest.mark.parametrize("jvp", ["finite-difference", "forward"])
@settings(max_examples=10)
@given(n=st.integers(1, 4), seed=SEEDS, t=TIMES)
def test_batch_of_n_equals_n_runs_of_one(skewed4, jvp, n, seed, t):
    """Each sample stops (and its d freezes) at its own iteration, whatever the batch does."""
    x_t, tt, e, x0, _ = _problem(skewed4, t, seed, batch=n)
    solver = cd.ExactNewton(iterations=12, tol=1e-3, jvp=jvp)
    d, info = solver.solve(skewed4, x_t, tt, e, x0)
    for i in range(n):
        d1, info1 = solver.solve(skewed4, x_t[i : i + 1], tt, e[i : i + 1], x0[i : i + 1])
        assert float(_rel(d[i : i + 1], d1)) < 1e-9
        assert int(info.iterations[i]) == int(info1.iterations[0])


@pytest.mark.parametrize("kwargs", [{}, {"jvp": "forward"}, {"method": "lstsq"}])
def test_zero_error_gives_zero_direction(skewed4, kwargs):
    x_t, tt, e, x0, _ = _problem(skewed4, 500, 1)
    solver = cd.ExactNewton(**kwargs)
    skewed4.reset_counters()
    d, info = solver.solve(skewed4, x_t, tt, torch.zeros_like(e), x0)
    assert torch.equal(d, torch.zeros_like(d)) and skewed4.nfe == 0 and skewed4.nbe == 0
    assert info.residual.tolist() == [0.0, 0.0] and bool(info.converged.all())
    e[1] = 0
    d = solver.direction(skewed4, x_t, tt, e, x0)
    assert torch.isfinite(d).all() and bool((d[1] == 0).all()) and bool((d[0] != 0).any())


@given(t=TIMES, seed=SEEDS)
def test_one_iteration_is_a_multiple_of_e(skewed4, t, seed):
    """GMRES with k = 1 returns y e, y = <Je, e> / |Je|^2 (a multiple of e, not of Je)."""
    x_t, tt, e, x0, J = _problem(skewed4, t, seed)
    d = cd.ExactNewton(iterations=1, jvp="forward").direction(skewed4, x_t, tt, e, x0)
    Je = _apply(J, e).flatten(1)
    y = (Je * e.flatten(1)).sum(1) / Je.square().sum(1)
    assert torch.allclose(d, y.view(-1, 1, 1, 1) * e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs,field", [
    ({"iterations": 0}, "iterations"), ({"tol": -1e-3}, "tol"), ({"tol": 1.0}, "tol"), ({"method": "cg"}, "method"),
    ({"jvp": "reverse"}, "jvp"), ({"h": 0.0}, "h"), ({"rcond": -0.1}, "rcond"), ({"max_dim": 0}, "max_dim"),
    ({"chunk": 0}, "chunk"), ({"tol": float("nan")}, "tol"),
])
def test_invalid_options_name_the_field(kwargs, field):
    with pytest.raises(ValidationError) as info:
        cd.ExactNewton(**kwargs)
    assert field in str(info.value)


def test_unknown_field_is_rejected():
    with pytest.raises(ValidationError, match="krylov"):
        cd.solvers.get("exact-newton", krylov=4)
    with pytest.raises(ValidationError, match="solver"):
        cd.SamplerConfig.model_validate({"solver": {"name": "exact-newton", "iterations": 0}})


def test_lstsq_refuses_large_dimensions(skewed4):
    x_t, tt, e, x0, _ = _problem(skewed4, 500, 0)
    with pytest.raises(ValueError, match=r"D = prod\(sample_shape\) = 16 exceeds max_dim=8; use method='gmres'"):
        cd.ExactNewton(method="lstsq", max_dim=8).direction(skewed4, x_t, tt, e, x0)


def test_registry_config_and_repr():
    assert "exact-newton" in cd.solvers.names()
    s = cd.solvers.get("exact-newton", iterations=5)
    assert isinstance(s, cd.ExactNewton) and s.iterations == 5 and not s.requires_graph
    assert repr(s) == ("ExactNewton(method='gmres', iterations=5, tol=0.001, jvp='finite-difference', h=None, "
                       "max_dim=4096, rcond=None, chunk=64)")
    assert eval(repr(cd.ExactNewton(method="lstsq", rcond=1e-6)), {"ExactNewton": cd.ExactNewton}).rcond == 1e-6
    cfg = cd.SamplerConfig.model_validate({"solver": {"name": "exact-newton", "method": "lstsq", "rcond": 0.01}})
    s = cd.solvers.get(cfg.solver)
    assert isinstance(s, cd.ExactNewton) and s.method == "lstsq" and s.rcond == 0.01
    assert cd.SamplerConfig.model_validate(cfg.model_dump()) == cfg


def test_sampler_inpainting_reduces_the_residual_tenfold():
    """Through the engine (which normalises d by max|d|), on a well-conditioned prior.

    The max-norm step makes the Newton direction a trust-region step: on the smooth prior of
    test_sampler.py (cond(J) ~ 1e2-1e3) J^-1 e is dominated by directions that J shrinks, and a
    step of max-norm lr barely moves x0 (every solver also misses 10x there with 5 steps x 3
    inner steps); a near-white prior (length_scale 0.5, cond(J) < 2) shows the solver working.
    """
    model = cd.GaussianDenoiser.smooth((1, 8, 8), length_scale=0.5, skew=0.3, dtype=torch.float64)  # near-white: see above
    truth = model.sample_prior(2, torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8, dtype=truth.dtype)
    mask[..., :4] = 1
    constraint = cd.Inpainting(truth, mask)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    steps, K = 10, 5
    free = cd.ConstrainedSampler(model, "exact-newton", steps=steps, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(model, "exact-newton", steps=steps, inner_steps=K).sample(constraint, x_T=x_T, progress=False)
    assert bool((fit.final_residual * 10 <= free.final_residual).all()), (fit.final_residual, free.final_residual)
    assert fit.nbe == 0 and steps * (1 + K) < fit.nfe <= steps * (1 + K * (1 + 10))
    short = cd.ConstrainedSampler(model, "exact-newton", steps=5, inner_steps=3).sample(constraint, x_T=x_T, progress=False)
    free5 = cd.ConstrainedSampler(model, "exact-newton", steps=5, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    assert bool((short.final_residual * 5 <= free5.final_residual).all()), (short.final_residual, free5.final_residual)


@pytest.fixture
def one_thread():
    """Tiny networks gain nothing from intra-op threads, and on a busy machine two threads
    spin against each other (forward AD through the UNet: ~0.2 s on one, ~12 s on two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_network_forward_gmres_meets_tol(one_thread, tiny_unet_factory):
    model = cd.NetworkDenoiser(tiny_unet_factory(), cd.VPSchedule.linear(), (1, 8, 8))
    g = torch.Generator().manual_seed(1)
    x_t, e, tt = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g), torch.tensor(800)
    tol = 1e-3
    d, info = cd.ExactNewton(iterations=64, tol=tol, jvp="forward").solve(model, x_t, tt, e, None)
    assert bool(info.converged.all()) and int(info.iterations.max()) < 64
    for i in range(2):
        J = analysis.jacobian(model, x_t[i : i + 1], tt)
        true = float((J @ d[i].flatten().double() - e[i].flatten().double()).norm() / e[i].double().norm())
        assert true <= tol
        assert abs(true - float(info.residual[i])) <= 1e-2 * tol
