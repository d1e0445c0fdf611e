"""Which inner loops make no host synchronisation, and which synchronise by design.

On the CPU a host read is free, so the loop reads ``(e != 0).any()`` to end early by default;
``host_checks=False`` is the path a GPU takes (``InnerLoop.reads_host`` is ``False`` off the
CPU). The CPU tests prove it reads nothing on the host: while `InnerLoop.apply` runs (one
denoising step's inner loop, its final update and the residual rows it returns), every
``Tensor`` method that hands a value to Python raises.

What the CPU guard lets through: reads of **0-dimensional float64, int64 and int32 tensors**.
On the CPU every tensor is a host tensor, so the guard cannot tell device data from host data
by device; it tells them apart by dtype and shape instead. The schedule's ``(alpha, sigma)``
(float64) and the grid's timestep (int64) are host scalars that the adapters read as Python
numbers at every forward (``NetworkDenoiser``'s ``float(alpha)``, the schedules' ``int(t)``),
which costs nothing on a GPU; the samples here are float32, so any other read is a read of
device data. The guard used to exempt those dtypes at every shape, which hid the Arnoldi step
rule's ``.cpu()`` of its float64 ``(B, k)`` coefficients (it was caught only by a CPU-side bool);
a scalar float64 or int64 value computed on the device and read inside the loop would still pass
it, so the CUDA test (``torch.cuda.set_sync_debug_mode("error")``, skipped without CUDA) is the
authoritative check.

Every registered solver and step-size rule is covered, on the CPU and on CUDA: the ones in
`SYNCING` read the host inside the loop by design and are asserted to (a fix that removes the
read fails its test until the entry goes), every other one is asserted clean. The engine
outside `InnerLoop.apply` synchronises twice per denoising step (the residual rows' copy and the
finiteness check), which the CUDA test counts.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import constrained_diffusion as cd
from constrained_diffusion.sampling.corrections import InnerLoop

SOLVERS = ["inexact-newton", "gradient-descent", "exact-jvp", "identity"]
"""The solvers whose loop is free of host reads (every registered one not in `SYNCING`)."""
SYNCING: dict[str, str] = {
    "secant-newton": "decides per inner step whether any sample needs a finite difference (bool(need.any())) and "
                     "copies its diagnostics (rho, pairs) to the host",
    "exact-newton": "GMRES stops when no sample is still active (bool(active.any())) and returns its residuals on the host",
    "arnoldi": "the step-size rule's Arnoldi iteration builds its Hessenberg matrix on the host (.cpu() per iteration) "
               "and takes the Ritz values there",
}
"""Solvers and step-size rules that read the host inside the inner loop, and why (docs/benchmarks.md)."""
CHEAP = {"exact-newton": {"name": "exact-newton", "iterations": 3}}
_READS = ("item", "tolist", "__bool__", "cpu", "numpy", "__float__", "__int__", "__index__")
_HOST_DTYPES = (torch.float64, torch.int64, torch.int32)
"""Dtypes of the host scalars the adapters read at every forward (see the module docstring)."""


def _host_scalar(t: torch.Tensor) -> bool:
    return t.ndim == 0 and t.dtype in _HOST_DTYPES


def _cases() -> list:
    """``(solver, step_size)``: every registered solver with the paper's rule, every rule with inexact Newton."""
    from constrained_diffusion.sampling.step_size import step_size_names
    from constrained_diffusion.solvers import registry

    return [(s, "dynamic") for s in registry.names()] + [("inexact-newton", r) for r in step_size_names() if r != "dynamic"]


def _syncs(solver: str, step_size: str) -> bool:
    return solver in SYNCING or step_size in SYNCING


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
            if inside[0] and not _host_scalar(self):
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
    sampler = cd.ConstrainedSampler(model, CHEAP.get(solver, solver), steps=4, correction=correction)
    return sampler.sample(constraint, generator=torch.Generator().manual_seed(0), batch_size=constraint.batch_size,
                          progress=False)


@pytest.mark.parametrize("solver, step_size", _cases())
def test_the_loop_reads_nothing_on_the_host(model, solver, step_size, monkeypatch):
    """Clean cases read nothing; the `SYNCING` ones are caught at their host read."""
    if _syncs(solver, step_size):
        with _no_host_reads(monkeypatch), pytest.raises(_HostRead):
            _sample(model, solver, False, _problem(), step_rule=step_size)
        return
    with _no_host_reads(monkeypatch):
        result = _sample(model, solver, False, _problem(), step_rule=step_size)
    assert torch.isfinite(result.sample).all() and result.residuals.shape == (4, 4, 2)


def test_every_solver_and_rule_is_classified():
    from constrained_diffusion.sampling.step_size import step_size_names
    from constrained_diffusion.solvers import registry

    assert set(registry.names()) == set(SOLVERS) | (set(SYNCING) - set(step_size_names()))
    assert set(step_size_names()) >= set(SYNCING) - set(registry.names())


def test_the_guard_lets_host_scalars_through_but_not_batched_float64():
    assert _host_scalar(torch.tensor(0.5, dtype=torch.float64)) and _host_scalar(torch.tensor(3))
    assert not _host_scalar(torch.zeros(2, dtype=torch.float64)) and not _host_scalar(torch.tensor(True))
    assert not _host_scalar(torch.tensor(0.5))  # a float32 scalar is sample data


def test_the_guard_catches_the_host_checks(model, monkeypatch):
    with _no_host_reads(monkeypatch), pytest.raises(_HostRead, match="__bool__"):
        _sample(model, "inexact-newton", True, _problem())


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("step_size", ["dynamic", "constant"])
def test_masked_work_gives_the_same_samples_as_the_early_exit(model, solver, step_size):
    synced = _sample(model, solver, True, _problem(), step_rule=step_size)
    free = _sample(model, solver, False, _problem(), step_rule=step_size)
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


def _strict_inner_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """`InnerLoop.apply` under ``torch.cuda.set_sync_debug_mode("error")``: a synchronising CUDA call raises."""
    apply = InnerLoop.apply

    def strict(self: InnerLoop, step, x_t):  # noqa: ANN001, ANN202
        torch.cuda.set_sync_debug_mode("error")
        try:
            return apply(self, step, x_t)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(InnerLoop, "apply", strict)


def _cuda_problem() -> tuple[cd.NetworkDenoiser, cd.Inpainting]:
    network = _Net().cuda().eval().requires_grad_(False)
    model = cd.NetworkDenoiser(network, cd.VPSchedule.linear(), (1, 8, 8))
    g = torch.Generator().manual_seed(1)
    y, mask = torch.randn(2, 1, 8, 8, generator=g).cuda(), torch.zeros(2, 1, 8, 8, device="cuda")
    mask[..., :4] = 1
    return model, cd.Inpainting(y, mask)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@needs_cuda
@pytest.mark.parametrize("solver, step_size", _cases())
def test_no_cuda_synchronisation_inside_the_loop(solver, step_size, monkeypatch):
    """Clean cases run under the sync-debug error mode; the `SYNCING` ones raise it, as documented."""
    model, constraint = _cuda_problem()
    _strict_inner_loop(monkeypatch)
    sampler = cd.ConstrainedSampler(model, CHEAP.get(solver, solver), steps=3,
                                    correction=InnerLoop(inner_steps=3, step_rule=step_size))
    run = lambda: sampler.sample(constraint, generator=torch.Generator().manual_seed(0), batch_size=2, progress=False)  # noqa: E731
    if _syncs(solver, step_size):
        with pytest.raises(RuntimeError, match="synchroniz"):
            run()
        return
    assert torch.isfinite(run().sample).all()


@needs_cuda
def test_cuda_engine_synchronises_twice_per_denoising_step():
    """Sync-debug warnings of whole samples of 3 and 5 steps differ by 2 per step (the residual copy, the finiteness check)."""
    import warnings

    model, constraint = _cuda_problem()

    def syncs(steps: int) -> int:
        sampler = cd.ConstrainedSampler(model, "inexact-newton", steps=steps, correction=InnerLoop(inner_steps=2))
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sampler.sample(constraint, generator=torch.Generator().manual_seed(0), batch_size=2, progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(5) - syncs(3) == 2 * 2


@needs_cuda
@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_no_cuda_synchronisation_through_the_diffusers_adapters(family, tmp_path, monkeypatch):
    from tiny_pipelines import tiny_sd, tiny_sd3

    g = torch.Generator().manual_seed(3)
    if family == "sd":
        den = cd.StableDiffusionDenoiser.from_pipeline(tiny_sd(tmp_path, with_text=False).to("cuda"))
        den = den.condition(prompt_embeds=torch.randn(1, 16, 32, generator=g).cuda())
    else:
        den = cd.FlowMatchDenoiser(tiny_sd3().to("cuda"))
        den = den.condition(prompt_embeds=torch.randn(1, 6, 32, generator=g).cuda(),
                            pooled_prompt_embeds=torch.randn(1, 64, generator=g).cuda())
    y = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(1)).cuda()
    mask = torch.zeros(2, 1, *den.sample_shape[1:], device="cuda")
    mask[..., : den.sample_shape[-1] // 2] = 1
    _strict_inner_loop(monkeypatch)
    sampler = cd.ConstrainedSampler(den, "inexact-newton", steps=2, correction=InnerLoop(inner_steps=2))
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
