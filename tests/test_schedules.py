"""Schedules, prediction conversions and the DDIM / Euler update."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.denoisers.network import to_x0
from constrained_diffusion.sampling import ddim_noise_scale, ddim_update


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("steps", [1, 10, 50, 1000])
def test_vp_grid_is_descending_and_in_range(spacing, steps):
    ts = cd.VPSchedule.linear(spacing=spacing).timesteps(steps)
    assert ts.shape == (steps,) and int(ts.max()) <= 999 and int(ts.min()) >= 0
    assert bool((ts[1:] < ts[:-1]).all())


def test_vp_trailing_starts_at_T_minus_one():
    assert cd.VPSchedule.linear().timesteps(20)[0] == 999
    ts = cd.VPSchedule.scaled_linear(spacing="leading", offset=1).timesteps(20)
    assert ts.tolist()[:3] == [951, 901, 851]  # Stable Diffusion's DDIM grid


def test_vp_alpha_sigma_is_variance_preserving():
    s = cd.VPSchedule.linear()
    for t in s.timesteps(10):
        a, sg = s.alpha_sigma(t)
        assert math.isclose(float(a**2 + sg**2), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_grid(shift):
    ts = cd.FlowSchedule(shift=shift).timesteps(8)
    assert float(ts[0]) == 1.0 and bool((ts[1:] < ts[:-1]).all()) and float(ts[-1]) > 0


def test_bad_steps():
    for schedule in (cd.VPSchedule.linear(), cd.FlowSchedule()):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            schedule.timesteps(0)
    with pytest.raises(ValueError, match="steps must be <= 1000"):
        cd.VPSchedule.linear().timesteps(1001)


@pytest.mark.parametrize("prediction", ["epsilon", "v", "velocity", "sample"])
@given(alpha=st.floats(0.05, 1.0), seed=st.integers(0, 100))
def test_prediction_conversions_recover_x0(prediction, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(2, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    sigma = 1 - alpha if prediction == "velocity" else math.sqrt(1 - alpha**2)
    x_t = alpha * x0 + sigma * eps
    out = {"epsilon": eps, "v": alpha * eps - sigma * x0, "velocity": eps - x0, "sample": x0}[prediction]
    assert torch.allclose(to_x0(out, x_t, alpha, sigma, prediction), x0, atol=1e-9)


@given(s=st.floats(0.05, 1.0), ds=st.floats(0.01, 0.5), seed=st.integers(0, 100))
def test_ddim_is_euler_for_rectified_flow(s, ds, seed):
    s_prev = max(0.0, s - ds)
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    x_t = (1 - s) * x0 + s * eps
    v = eps - x0
    out = ddim_update(x_t, x0, 1 - s, s, 1 - s_prev, s_prev)
    assert torch.allclose(out, x_t + (s_prev - s) * v, atol=1e-12)


@given(t=st.integers(1, 999), gap=st.integers(1, 200), eta=st.floats(0.0, 1.0))
def test_noise_scale_is_ddim_sigma(t, gap, eta):
    abar = cd.VPSchedule.linear().alphas_cumprod
    a_t, a_p = float(abar[t]), float(abar[max(0, t - gap)])
    ddim = eta * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(1 - a_t / a_p)
    ours = ddim_noise_scale(math.sqrt(a_t), math.sqrt(1 - a_t), math.sqrt(a_p), math.sqrt(1 - a_p), eta)
    assert math.isclose(ours, ddim, rel_tol=1e-9, abs_tol=1e-12)


def test_gaussian_jacobian_matches_autograd(gaussian4, skewed4):
    for skew, m in ((0.0, gaussian4), (0.5, skewed4)):
        t = torch.tensor(300)
        x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(lambda z: m.predict_x0(z, t).flatten(), x).reshape(16, 16)
        assert torch.allclose(J, m.jacobian(t))
        assert torch.allclose(J, J.T) == (skew == 0.0)


def test_network_denoiser_wraps_a_callable():
    net = lambda x, t: torch.zeros_like(x)  # noqa: E731  predicts eps = 0
    m = cd.NetworkDenoiser(net, cd.VPSchedule.linear(), (1, 2, 2))
    t = torch.tensor(500)
    a, _ = m.alpha_sigma(t)
    x = torch.ones(1, 1, 2, 2)
    assert torch.allclose(m(x, t), x / float(a)) and m.nfe == 1
    with pytest.raises(ValueError, match="prediction must be"):
        cd.NetworkDenoiser(net, cd.VPSchedule.linear(), (1, 2, 2), prediction="noise")  # type: ignore[arg-type]
