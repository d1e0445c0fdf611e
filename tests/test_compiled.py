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
