"""`TimeGrid`, `NoiseSchedule.grid` and the one way a denoiser gets its times: its schedule."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.denoisers import (
    Denoiser,
    FlowMatchEulerSchedule,
    FlowSchedule,
    TimeGrid,
    VPSchedule,
)
from constrained_diffusion.denoisers.guidance import classifier_free_guidance


def _check_grid(schedule, steps: int) -> TimeGrid:
    """The contract: deterministic, pure, S times, S + 1 float64 points, sigma > 0 before the end."""
    before = copy.deepcopy(vars(schedule))
    grid = schedule.grid(steps)
    schedule.grid(max(2, steps // 2))  # another call in between changes nothing
    assert schedule.grid(steps) == grid
    assert vars(schedule).keys() == before.keys()
    for key, value in before.items():
        now = vars(schedule)[key]
        assert torch.equal(now, value) if isinstance(value, torch.Tensor) else now == value, key
    assert len(grid) == steps and grid.times.shape == (steps,)
    assert grid.alpha.shape == grid.sigma.shape == (steps + 1,)
    assert grid.alpha.dtype == grid.sigma.dtype == torch.float64
    assert bool((grid.sigma[:-1] > 0).all()) and bool((grid.alpha >= 0).all())
    assert bool((grid.times[1:] < grid.times[:-1]).all())
    for i, t in enumerate(grid.times):
        assert grid.point(i) == tuple(float(v) for v in schedule.alpha_sigma(t))
    assert grid.point(steps) == tuple(float(v) for v in schedule.final_alpha_sigma())
    assert torch.equal(grid.times, schedule.timesteps(steps))
    return grid


# --- VP: equal to diffusers' DDIM ------------------------------------------------------------
@given(steps=st.integers(1, 1000), spacing=st.sampled_from(["trailing", "leading", "linspace"]),
       offset=st.integers(0, 1), alpha_one=st.booleans())
def test_vp_grid_is_ddims(steps, spacing, offset, alpha_one):
    diffusers = pytest.importorskip("diffusers")
    schedule = VPSchedule.scaled_linear(spacing=spacing, offset=offset, final_alpha_one=alpha_one)
    ddim = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=alpha_one)
    ddim.set_timesteps(steps)
    if spacing == "leading" and (steps - 1) * (1000 // steps) + offset > 999:  # DDIM would run past T - 1
        with pytest.raises(ValueError, match=f"steps={steps} with 'leading' spacing"):
            schedule.grid(steps)
        return
    grid = _check_grid(schedule, steps)
    # for some steps numpy's float arange gives DDIM "trailing" one spurious extra time, -1
    assert torch.equal(grid.times, ddim.timesteps[:steps]) and ddim.timesteps[steps:].tolist() in ([], [-1])
    assert torch.allclose(grid.alpha[:-1] ** 2, ddim.alphas_cumprod[grid.times].double(), rtol=1e-5)
    assert torch.isclose(grid.alpha[-1] ** 2, ddim.final_alpha_cumprod.double(), rtol=1e-6)


def test_vp_from_alphas_cumprod_round_trips_the_betas():
    schedule = VPSchedule.linear()
    again = VPSchedule.from_alphas_cumprod(schedule.alphas_cumprod)
    assert torch.allclose(again.betas, torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64), atol=1e-12)
    assert again.grid(10) == schedule.grid(10)
    with pytest.raises(ValueError, match="alphas_cumprod must be non-increasing"):
        VPSchedule.from_alphas_cumprod(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="offset must be >= 0"):
        VPSchedule.linear(offset=-1)


# --- flows ---------------------------------------------------------------------------------
@given(steps=st.integers(1, 300), shift=st.floats(0.5, 6.0), s_min=st.floats(0.0, 0.5))
def test_flow_grid(steps, shift, s_min):
    grid = _check_grid(FlowSchedule(shift=shift, s_min=s_min), steps)
    assert grid.point(steps) == (1.0, 0.0) and float(grid.times[0]) == pytest.approx(1.0)
    assert torch.equal(grid.alpha + grid.sigma, torch.ones(steps + 1, dtype=torch.float64))


def _diffusers_sigmas(config: dict, steps: int, base: str, mu: float | None) -> torch.Tensor:
    """What a pipeline gets from ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (a fresh scheduler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    extra = {"mu": mu} if mu is not None else {}
    if base == "linear":
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), **extra)
    else:
        scheduler.set_timesteps(steps, **extra)
    return scheduler.sigmas.double()


@given(steps=st.integers(2, 200), shift=st.floats(0.5, 6.0), dynamic=st.booleans(), seq_len=st.integers(16, 4096),
       time_shift=st.sampled_from(["exponential", "linear"]), base=st.sampled_from(["scheduler", "linear"]),
       terminal=st.sampled_from([None, 0.02, 0.1]))
def test_flow_match_euler_grid_is_the_diffusers_schedulers(steps, shift, dynamic, seq_len, time_shift, base, terminal):
    pytest.importorskip("diffusers")
    config = {"shift": shift, "use_dynamic_shifting": dynamic, "base_image_seq_len": 16, "max_image_seq_len": 256,
              "time_shift_type": time_shift, "shift_terminal": terminal}
    schedule = FlowMatchEulerSchedule.from_config(config, seq_len, base=base)  # type: ignore[arg-type]
    assert (schedule.mu is None) == (not dynamic)
    grid = _check_grid(schedule, steps)
    ref = _diffusers_sigmas(config, steps, base, schedule.mu)
    assert torch.equal(grid.sigma, ref) and torch.equal(grid.times, ref[:-1])  # bit for bit
    assert torch.equal(schedule.model_time(grid.times[1]), ref[1].float() * 1000)  # the pipeline's timestep


def test_flow_match_euler_rejects_what_it_cannot_reproduce():
    for option in ("use_karras_sigmas", "invert_sigmas"):
        with pytest.raises(ValueError, match=f"unsupported scheduler configuration: {option}"):
            FlowMatchEulerSchedule.from_config({option: True}, 64)
    with pytest.raises(ValueError, match="steps must be >= 2 with shift_terminal"):
        FlowMatchEulerSchedule(shift_terminal=0.1).grid(1)
    with pytest.raises(ValueError, match="base must be"):
        FlowMatchEulerSchedule(base="karras")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        FlowMatchEulerSchedule().grid(0)


# --- TimeGrid ------------------------------------------------------------------------------
def test_time_grid_checks_its_shapes():
    times = torch.tensor([0.9, 0.5])
    with pytest.raises(ValueError, match=r"alpha must have shape \(3,\)"):
        TimeGrid(times, torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="times must be a non-empty 1-D tensor"):
        TimeGrid(torch.zeros(0), torch.ones(1), torch.ones(1))
    grid = TimeGrid(times, torch.tensor([0.1, 0.5, 1.0]), torch.tensor([0.9, 0.5, 0.0]))
    assert grid.alpha.dtype == torch.float64 and grid.point(2) == (1.0, 0.0) and grid.point(-1) == (1.0, 0.0)
    with pytest.raises(IndexError, match="i must lie in"):
        grid.point(3)
    assert grid != FlowSchedule().grid(2) and grid == TimeGrid(times.clone(), grid.alpha.clone(), grid.sigma.clone())


# --- the Denoiser side: one way ------------------------------------------------------------
class _Zero(Denoiser):
    """A denoiser is ``predict_x0`` and a schedule, nothing else."""

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x_t)


class _Upsample:
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2, ::2]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.repeat_interleave(2, -1).repeat_interleave(2, -2)


def test_a_denoiser_is_predict_x0_and_a_schedule():
    den = _Zero((1, 2, 2), schedule=VPSchedule.linear())
    assert den.grid(5) == den.schedule.grid(5) == VPSchedule.linear().grid(5)
    assert torch.equal(den.timesteps(5), den.grid(5).times)
    assert den.final_alpha_sigma() == den.schedule.final_alpha_sigma()
    r = cd.ConstrainedSampler(den, steps=3, inner_steps=0).sample(None, batch_size=1, progress=False)
    assert r.sample.shape == (1, 1, 2, 2) and den.nfe > 0
    with pytest.raises(AttributeError, match="_Zero has no schedule: pass schedule="):
        _Zero((1, 2, 2)).grid(3)
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        _Zero((1, 2, 2), schedule="vp")  # type: ignore[arg-type]


def test_space_follows_the_codec_and_decode_uses_it():
    pixel, latent = _Zero((1, 2, 2), schedule=FlowSchedule()), _Zero((1, 2, 2), codec=_Upsample(), schedule=FlowSchedule())
    assert pixel.space == "pixel" and latent.space == "latent"
    z = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert pixel.decode(z) is z and latent.decode(z).shape == (1, 1, 4, 4)
    assert _Zero((1, 2, 2), "latent", _Upsample(), FlowSchedule()).space == "latent"
    with pytest.raises(ValueError, match="space='latent' contradicts codec=None"):
        _Zero((1, 2, 2), space="latent", schedule=FlowSchedule())
    with pytest.raises(ValueError, match="space='pixel' contradicts codec=_Upsample"):
        _Zero((1, 2, 2), space="pixel", codec=_Upsample())
    with pytest.raises(ValueError, match="space must be 'pixel' or 'latent'"):
        _Zero((1, 2, 2), space="voxel")  # type: ignore[arg-type]


def test_the_shipped_denoisers_read_their_schedule():
    g = cd.GaussianDenoiser.smooth((1, 4, 4), schedule=VPSchedule.linear(spacing="leading"))  # built here: the schedule it is given is the point
    assert g.grid(7) == VPSchedule.linear(spacing="leading").grid(7) and g.space == "pixel"
    net = cd.NetworkDenoiser(lambda x, t: x, FlowSchedule(shift=2.0), (1, 2, 2), prediction="velocity")
    assert net.grid(4) == FlowSchedule(shift=2.0).grid(4)


def test_classifier_free_guidance():
    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:  # the second half of a guided batch is "conditional": 3 x
        calls.append(x.shape[0])
        half = x.shape[0] // 2
        return torch.cat([x[:half], 3 * x[half:]])

    x = torch.ones(2, 1)
    assert torch.equal(classifier_free_guidance(net, x[:1], None), 3 * x[:1]) and calls == [1]
    # u = 1, c = 3: u + w (c - u) = 1 + 2 w
    assert torch.equal(classifier_free_guidance(net, x, 2.5), torch.full((2, 1), 6.0)) and calls == [1, 4]
