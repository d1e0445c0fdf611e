"""Each solver's direction against the exact Jacobian of the analytic denoiser."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd

TIMES = st.sampled_from([999, 800, 500, 200, 50, 10])
SEEDS = st.integers(0, 2**16)


def _setup(model: cd.GaussianDenoiser, t: int, seed: int, graph: bool):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(2, *model.sample_shape, generator=g, dtype=torch.float64)
    e = torch.randn(2, *model.sample_shape, generator=g, dtype=torch.float64)
    tt = torch.tensor(t)
    if graph:
        x_t = x_t.requires_grad_(True)
    with torch.set_grad_enabled(graph):
        x0 = model(x_t, tt)
    J = model.jacobian(tt)
    Je = (e.flatten(1) @ J.T).reshape(e.shape)
    JTe = (e.flatten(1) @ J).reshape(e.shape)
    return x_t, tt, e, x0, Je, JTe


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).flatten(1).norm(dim=1).max() / b.flatten(1).norm(dim=1).min())


@given(t=TIMES, seed=SEEDS)
def test_inexact_newton_is_Je(skewed, t, seed):
    x_t, tt, e, x0, Je, _ = _setup(skewed, t, seed, graph=False)
    d = cd.InexactNewton().direction(skewed, x_t, tt, e, x0)
    assert _rel(d, Je) < 1e-3


@given(t=TIMES, seed=SEEDS)
def test_gradient_descent_is_JTe(skewed, t, seed):
    x_t, tt, e, x0, _, JTe = _setup(skewed, t, seed, graph=True)
    d = cd.GradientDescent().direction(skewed, x_t, tt, e, x0)
    assert _rel(d, JTe) < 1e-10


@pytest.mark.parametrize("method", ["forward", "double-backward"])
@given(t=TIMES, seed=SEEDS)
def test_exact_jvp_is_Je(skewed, method, t, seed):
    x_t, tt, e, x0, Je, _ = _setup(skewed, t, seed, graph=method == "double-backward")
    d = cd.ExactJVP(method=method).direction(skewed, x_t, tt, e, x0)
    assert _rel(d, Je) < 1e-5


@given(t=TIMES, seed=SEEDS)
def test_identity_direction_is_e_and_calls_no_network(skewed, t, seed):
    x_t, tt, e, x0, _, _ = _setup(skewed, t, seed, graph=False)
    skewed.reset_counters()
    d = cd.IdentityDirection().direction(skewed, x_t, tt, e, x0)
    assert torch.equal(d, e) and d is not e and (skewed.nfe, skewed.nbe) == (0, 0)


def test_one_linearised_step_along_e_beats_Je_for_a_symmetric_jacobian(gaussian):
    """The law behind the identity baseline: min_g ||e - g J e|| <= min_g ||e - g J^2 e|| for J = J^T >= 0."""
    for t, seed in [(900, 0), (500, 1), (100, 2)]:
        _, tt, e, _, Je, _ = _setup(gaussian, t, seed, graph=False)
        J = gaussian.jacobian(tt)
        JJe = (Je.flatten(1) @ J.T)

        def left(v: torch.Tensor) -> torch.Tensor:
            g = (v * e.flatten(1)).sum(1, keepdim=True) / (v * v).sum(1, keepdim=True)
            return (e.flatten(1) - g * v).norm(dim=1)

        assert bool((left(Je.flatten(1)) <= left(JJe) + 1e-12).all())


def test_nonsymmetric_jacobian_separates_Je_from_JTe(skewed, gaussian):
    for model, expect_differ in [(skewed, True), (gaussian, False)]:
        x_t, tt, e, x0, _, _ = _setup(model, 500, 0, graph=True)
        d_in = cd.InexactNewton().direction(model, x_t.detach(), tt, e, x0.detach())
        d_gd = cd.GradientDescent().direction(model, x_t, tt, e, x0)
        assert (_rel(d_in, d_gd) > 0.05) == expect_differ


def test_float32_inexact_newton_within_1e_3():
    model = cd.GaussianDenoiser.smooth((1, 8, 8), length_scale=2.0, skew=0.5)  # `skewed`, but float32: the dtype is the point
    x_t, tt, e, x0, Je, _ = _setup(model, 500, 3, graph=False)
    d = cd.InexactNewton().direction(model, x_t.float(), tt, e.float(), x0.float())
    assert _rel(d.double(), Je) < 1e-3


def test_zero_error_sample_gets_zero_direction(gaussian):
    x_t, tt, e, x0, _, _ = _setup(gaussian, 500, 1, graph=False)
    e[1] = 0
    d = cd.InexactNewton().direction(gaussian, x_t, tt, e, x0)
    assert torch.isfinite(d).all() and bool((d[1] == 0).all()) and bool((d[0] != 0).any())


def test_solver_counts(gaussian):
    x_t, tt, e, x0, _, _ = _setup(gaussian, 500, 1, graph=True)
    gaussian.reset_counters()
    cd.GradientDescent().direction(gaussian, x_t, tt, e, x0)
    assert (gaussian.nfe, gaussian.nbe) == (0, 1)
    gaussian.reset_counters()
    cd.ExactJVP("double-backward").direction(gaussian, x_t, tt, e, gaussian(x_t, tt))
    assert (gaussian.nfe, gaussian.nbe) == (1, 2)
    gaussian.reset_counters()
    cd.InexactNewton().direction(gaussian, x_t.detach(), tt, e, x0.detach())
    assert (gaussian.nfe, gaussian.nbe) == (1, 0)


def test_solver_registry_round_trip():
    assert set(cd.solvers.names()) >= {"inexact-newton", "gradient-descent", "exact-jvp", "identity"}
    assert isinstance(cd.solvers.get("identity"), cd.IdentityDirection)
    s = cd.solvers.get("inexact-newton", h=0.01)
    assert isinstance(s, cd.InexactNewton) and s.h == 0.01
    s = cd.solvers.get({"name": "exact-jvp", "method": "double-backward"})
    assert isinstance(s, cd.ExactJVP) and s.requires_graph
    with pytest.raises(ValueError, match="unknown solver 'newton'"):
        cd.solvers.get("newton")
