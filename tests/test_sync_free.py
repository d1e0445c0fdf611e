"""The inner loop makes no host synchronisation without an adaptive stop (``host_checks=False``).

On the CPU a host read is free, so the loop reads ``(e != 0).any()`` to end early by default;
``host_checks=False`` is the path a GPU takes (``InnerLoop.reads_host`` is ``False`` off the
CPU). The CPU tests prove it reads nothing on the host: while `InnerLoop.apply` runs (one
denoising step's inner loop, its final update and the residual rows it returns), every
``Tensor`` method that hands a value to Python raises. The engine copies the ``(K + 1, B)``
residual rows and checks finiteness once per denoising step, after `apply` returns: that is
the bound. The GPU test (skipped without CUDA) runs the same step under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import constrained_diffusion as cd
from constrained_diffusion.sampling.corrections import InnerLoop

SOLVERS = ["inexact-newton", "gradient-descent", "exact-jvp", "identity"]
_READS = ("item", "tolist", "__bool__", "cpu", "numpy", "__float__", "__int__", "__index__")
_HOST_DTYPES = (torch.float64, torch.int64, torch.int32)
"""The schedule's ``(alpha, sigma)`` and the grid times live on the host in these dtypes; the
samples here are float32, so a read of a float32 tensor is a read of device data."""


class _HostRead(AssertionError):
    pass


@contextlib.contextmanager
def _no_host_reads(monkeypatch: pytest.MonkeyPatch):
    """Make every host read of a sample-dtype tensor raise inside `InnerLoop.apply`."""
    inside = [False]
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def guard(name: str):
        original = originals[name]

        def read(self: torch.Tensor, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if inside[0] and self.dtype not in _HOST_DTYPES:
                raise _HostRead(f"host read Tensor.{name} of a {self.dtype} tensor {tuple(self.shape)} inside the inner loop")
            return original(self, *args, **kwargs)

        return read

    apply = InnerLoop.apply

    def guarded_apply(self: InnerLoop, step, x_t):  # noqa: ANN001, ANN202
        inside[0] = True
        try:
            return apply(self, step, x_t)
        finally:
            inside[0] = False

    with monkeypatch.context() as m:
        for name in _READS:
            m.setattr(torch.Tensor, name, guard(name))
        m.setattr(InnerLoop, "apply", guarded_apply)
        yield


class _Net(nn.Module):
    """A small float32 convolutional epsilon network ``(x, t) -> eps``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x) + t.reshape(-1, 1, 1, 1) / 1000))


@pytest.fixture(scope="module")
def model() -> cd.NetworkDenoiser:
    return cd.NetworkDenoiser(_Net().eval().requires_grad_(False), cd.VPSchedule.linear(), (1, 8, 8))


def _problem(batch: int = 2, zero_error_sample: bool = True) -> cd.Inpainting:
    y = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(batch, 1, 8, 8)
    mask[..., :4] = 1
    if zero_error_sample:
        mask[-1] = 0  # nothing known: the last sample's error is zero at every step
    return cd.Inpainting(y, mask)


def _sample(model: cd.Denoiser, solver: str, host_checks: bool | None, constraint: cd.Constraint, **loop) -> cd.SampleResult:
    correction = InnerLoop(inner_steps=3, host_checks=host_checks, **loop)
    sampler = cd.ConstrainedSampler(model, solver, steps=4, correction=correction)
    return sampler.sample(constraint, generator=torch.Generator().manual_seed(0), batch_size=constraint.batch_size,
                          progress=False)


@pytest.mark.parametrize("solver", SOLVERS)
def test_the_loop_reads_nothing_on_the_host(model, solver, monkeypatch):
    with _no_host_reads(monkeypatch):
        result = _sample(model, solver, False, _problem())
    assert torch.isfinite(result.sample).all() and result.residuals.shape == (4, 4, 2)


def test_the_guard_catches_the_host_checks(model, monkeypatch):
    with _no_host_reads(monkeypatch), pytest.raises(_HostRead, match="__bool__"):
        _sample(model, "inexact-newton", True, _problem())


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("step_size", ["dynamic", "constant"])
def test_masked_work_gives_the_same_samples_as_the_early_exit(model, solver, step_size):
    synced = _sample(model, solver, True, _problem(), step_size=step_size)
    free = _sample(model, solver, False, _problem(), step_size=step_size)
    assert torch.equal(synced.sample, free.sample) and torch.equal(synced.residuals, free.residuals)
    assert synced.nfe == free.nfe  # one sample with an error keeps the loop going in both


def test_a_zero_error_sample_stays_where_plain_sampling_puts_it(model):
    free = _sample(model, "inexact-newton", False, _problem())
    plain = cd.ConstrainedSampler(model, "inexact-newton", steps=4, inner_steps=0).sample(
        None, generator=torch.Generator().manual_seed(0), batch_size=2, progress=False)
    assert torch.equal(free.sample[1], plain.sample[1]) and not torch.equal(free.sample[0], plain.sample[0])


def test_all_zero_errors_cost_masked_forwards_but_change_nothing(model):
    nothing = cd.Inpainting(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    synced, free = _sample(model, "inexact-newton", None, nothing), _sample(model, "inexact-newton", False, nothing)
    assert torch.equal(synced.sample, free.sample) and torch.equal(synced.residuals, free.residuals)
    assert (synced.nfe, free.nfe) == (4, 4 * (1 + 2 * 3))


def test_host_checks_default_follows_the_device_and_the_stop():
    assert InnerLoop().reads_host(torch.device("cpu"))
    assert not InnerLoop().reads_host(torch.device("cuda"))
    assert InnerLoop(stop=cd.sampling.AdaptiveStop(residual_tol=0.1)).reads_host(torch.device("cuda"))
    assert not InnerLoop(host_checks=False).reads_host(torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", SOLVERS)
def test_no_cuda_synchronisation_inside_the_loop(solver, monkeypatch):
    network = _Net().cuda().eval().requires_grad_(False)
    model = cd.NetworkDenoiser(network, cd.VPSchedule.linear(), (1, 8, 8))
    y, mask = torch.randn(2, 1, 8, 8, device="cuda"), torch.zeros(2, 1, 8, 8, device="cuda")
    mask[..., :4] = 1
    apply = InnerLoop.apply

    def strict(self: InnerLoop, step, x_t):  # noqa: ANN001, ANN202
        torch.cuda.set_sync_debug_mode("error")
        try:
            return apply(self, step, x_t)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(InnerLoop, "apply", strict)
    sampler = cd.ConstrainedSampler(model, solver, steps=3, correction=InnerLoop(inner_steps=3))
    result = sampler.sample(cd.Inpainting(y, mask), generator=torch.Generator().manual_seed(0), batch_size=2, progress=False)
    assert torch.isfinite(result.sample).all()


@pytest.mark.parametrize("family", ["sd", "sd3", pytest.param("flux", marks=pytest.mark.slow)])
def test_the_diffusers_adapters_read_nothing_on_the_host_either(family, tmp_path, monkeypatch):
    from tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3

    if family == "sd":
        den = cd.StableDiffusionDenoiser.from_pipeline(tiny_sd(tmp_path, with_text=False))
        den = den.condition(prompt_embeds=torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(3)))
    else:
        den = cd.FlowMatchDenoiser(tiny_sd3() if family == "sd3" else tiny_flux())
        text_dim, pooled_dim = (32, 64) if family == "sd3" else (32, 32)
        g = torch.Generator().manual_seed(3)
        den = den.condition(prompt_embeds=torch.randn(1, 6, text_dim, generator=g),
                            pooled_prompt_embeds=torch.randn(1, pooled_dim, generator=g))
    y = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(2, 1, *den.sample_shape[1:])
    mask[..., : den.sample_shape[-1] // 2] = 1
    sampler = cd.ConstrainedSampler(den, "inexact-newton", steps=2, correction=InnerLoop(inner_steps=2, host_checks=False))
    with _no_host_reads(monkeypatch):
        result = sampler.sample(cd.Inpainting(y, mask), generator=torch.Generator().manual_seed(0), batch_size=2,
                                progress=False)
    assert torch.isfinite(result.sample).all()
