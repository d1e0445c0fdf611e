"""``compile=True`` on the diffusers adapters: the same numbers as eager, one graph per shape."""

from __future__ import annotations

import pytest
import torch
from tiny_pipelines import tiny_flux, tiny_sd, tiny_sd3

import constrained_diffusion as cd
from constrained_diffusion.denoisers.compiled import CompileOptions

GRAPHS: list[int] = []


def _counting(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):  # noqa: ANN202
    """A backend that records each graph it is given and runs it as traced (eagerly)."""
    GRAPHS.append(len(gm.graph.nodes))
    return gm.forward


torch._dynamo.register_backend(_counting, name="cd-test-counting")


def _sd(tmp_path, **options) -> cd.StableDiffusionDenoiser:
    den = cd.StableDiffusionDenoiser.from_pipeline(tiny_sd(tmp_path, with_text=False), **options)
    return den.condition(prompt_embeds=torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(3)))


def _flow(family: str, **options) -> cd.FlowMatchDenoiser:
    den = cd.FlowMatchDenoiser.from_pipeline(tiny_sd3() if family == "sd3" else tiny_flux(), **options)
    g = torch.Generator().manual_seed(3)
    pooled = 64 if family == "sd3" else 32
    return den.condition(prompt_embeds=torch.randn(1, 6, 32, generator=g), pooled_prompt_embeds=torch.randn(1, pooled, generator=g))


def _inpainting(den: cd.Denoiser, batch: int = 2) -> cd.Inpainting:
    y = torch.randn(batch, *den.sample_shape, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(batch, 1, *den.sample_shape[1:])
    mask[..., : den.sample_shape[-1] // 2] = 1
    return cd.Inpainting(y, mask)


def _sample(den: cd.Denoiser, solver: str) -> cd.SampleResult:
    sampler = cd.ConstrainedSampler(den, solver, steps=2, inner_steps=2)
    return sampler.sample(_inpainting(den), generator=torch.Generator().manual_seed(0), batch_size=2, progress=False)


def _make(family: str, tmp_path, **options) -> cd.Denoiser:
    return _sd(tmp_path, **options) if family == "sd" else _flow(family, **options)


@pytest.mark.parametrize("family, solver, backend", [
    ("sd", "inexact-newton", "cd-test-counting"),
    ("sd3", "inexact-newton", "aot_eager"),
    pytest.param("sd", "gradient-descent", "aot_eager", marks=pytest.mark.slow),
    pytest.param("flux", "inexact-newton", "aot_eager", marks=pytest.mark.slow),
    pytest.param("flux", "gradient-descent", "aot_eager", marks=pytest.mark.slow),
])
def test_compiled_sampling_equals_eager(family, solver, backend, tmp_path):
    torch._dynamo.reset()
    GRAPHS.clear()
    eager, compiled = _make(family, tmp_path), _make(family, tmp_path, compile=True, compile_backend=backend)
    assert compiled.compile_options.compile and not eager.compile_options.compile
    a, b = _sample(eager, solver), _sample(compiled, solver)
    assert (a.nfe, a.nbe) == (b.nfe, b.nbe)
    torch.testing.assert_close(b.sample, a.sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.residuals, a.residuals, rtol=1e-4, atol=1e-5)
    if backend == "cd-test-counting":
        # plain evaluations and the perturbed ones of the finite difference share one shape: one graph
        assert a.nfe == 2 * (1 + 2 * 2) and len(GRAPHS) == 1
        compiled(torch.randn(3, *compiled.sample_shape), compiled.timesteps(2)[0])  # another batch: one more graph
        assert len(GRAPHS) == 2


def test_the_conditioned_copies_share_the_compiled_forward(tmp_path):
    den = _sd(tmp_path, compile=True, compile_backend="aot_eager")
    other = den.condition(prompt_embeds=torch.zeros(1, 16, 32))
    assert other._unet is den._unet and other.unet is den.unet


def test_from_pretrained_forwards_the_compile_options(tmp_path):
    tiny_sd(tmp_path / "src", with_text=False).save_pretrained(tmp_path / "pipe")
    den = cd.StableDiffusionDenoiser.from_pretrained(tmp_path / "pipe", compile=True, compile_mode="reduce-overhead")
    assert den.compile_options == CompileOptions(True, "reduce-overhead", "inductor")


@pytest.mark.parametrize("options, message", [
    ({"compile_mode": "fast", "compile": True}, "compile_mode"),
    ({"compile_mode": "reduce-overhead"}, "without compile=True"),
    ({"compile": True, "compile_backend": ""}, "compile_backend"),
    ({"compile": "yes"}, "compile must be"),
])
def test_bad_compile_options_name_the_parameter(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        cd.StableDiffusionDenoiser.from_pipeline(tiny_sd(tmp_path, with_text=False), **options)


@pytest.mark.slow
def test_the_inductor_backend_equals_eager(tmp_path):
    """The default backend (generated C++ kernels on the CPU): well under a minute on 2 cores."""
    eager, compiled = _sd(tmp_path), _sd(tmp_path, compile=True)
    x, t = torch.randn(2, *eager.sample_shape, generator=torch.Generator().manual_seed(5)), eager.timesteps(2)[0]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t), eager(x, t), rtol=1e-4, atol=1e-5)


# --- CUDA cases (skipped without CUDA; scripts/gpu_check.sh runs them with `pytest -k cuda`) ------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cuda_sd(tmp_path, dtype: torch.dtype, **options) -> cd.StableDiffusionDenoiser:
    pipe = tiny_sd(tmp_path, with_text=False).to("cuda", dtype)
    den = cd.StableDiffusionDenoiser.from_pipeline(pipe, **options)
    return den.condition(prompt_embeds=torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(3)).to("cuda", dtype))


@needs_cuda
@pytest.mark.parametrize("mode", ["reduce-overhead"])
def test_cuda_compiled_sampling_equals_eager(mode, tmp_path):
    """Inductor on CUDA, float32: CUDA graphs (reduce-overhead) keep D(x_t) valid while D(x_t + h'e) replays."""
    torch._dynamo.reset()
    eager, compiled = _cuda_sd(tmp_path, torch.float32), _cuda_sd(tmp_path, torch.float32, compile=True, compile_mode=mode)
    y = torch.randn(2, *eager.sample_shape, generator=torch.Generator().manual_seed(1)).cuda()
    mask = torch.zeros(2, 1, *eager.sample_shape[1:], device="cuda")
    mask[..., : eager.sample_shape[-1] // 2] = 1
    runs = [cd.ConstrainedSampler(d, "inexact-newton", steps=3, inner_steps=2).sample(
        cd.Inpainting(y, mask), generator=torch.Generator().manual_seed(0), batch_size=2, progress=False) for d in (eager, compiled)]
    assert (runs[0].nfe, runs[0].nbe) == (runs[1].nfe, runs[1].nbe) == (3 * (1 + 2 * 2), 0)
    # cuDNN / TF32 may pick other kernels in the compiled graph: agreement to float32 kernel tolerance
    torch.testing.assert_close(runs[1].sample, runs[0].sample, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(runs[1].residuals, runs[0].residuals, rtol=1e-2, atol=1e-3)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_exact_jvp(dtype, tmp_path):
    """Forward-mode AD through the SD UNet on CUDA in half precision agrees with float32 (no double-backward fallback)."""
    import warnings

    from constrained_diffusion.solvers.exact_jvp import forward_jvp

    ref, half = _cuda_sd(tmp_path / "a", torch.float32), _cuda_sd(tmp_path / "b", dtype)
    g = torch.Generator().manual_seed(0)
    x, e = (torch.randn(2, *ref.sample_shape, generator=g).cuda() for _ in range(2))
    t = ref.grid(10).times[4]
    _, jv_ref = forward_jvp(ref, x, t, e)
    x0, jv = forward_jvp(half, x.to(dtype), t, e)
    assert x0.dtype == dtype and jv.dtype == torch.float32 and jv.device.type == "cuda"
    cosine = torch.nn.functional.cosine_similarity(jv.double().flatten(1), jv_ref.double().flatten(1)).min()
    assert cosine >= 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback to double backward warns
        d = cd.ExactJVP().direction(half, x.to(dtype), t, e, x0)
    assert torch.nn.functional.cosine_similarity(d.double().flatten(1), jv_ref.double().flatten(1)).min() >= 0.99
