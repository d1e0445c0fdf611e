"""The rectified-flow (SD3) adapter on a tiny random pipeline saved to and loaded from a folder."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd

# every registered solver runs; exact Newton with a 3-dimensional Krylov space keeps it cheap
CHEAP = {"exact-newton": {"name": "exact-newton", "iterations": 3}}

pytest.importorskip("diffusers")
from tiny_pipelines import tiny_flux, tiny_sd3

from constrained_diffusion.denoisers import FluxDenoiser, SD3Denoiser
from constrained_diffusion.denoisers.flow_match import FlowMatchDenoiser


def _embeds():
    g = torch.Generator().manual_seed(0)
    return {"prompt_embeds": torch.randn(1, 7, 32, generator=g), "pooled_prompt_embeds": torch.randn(1, 64, generator=g),
            "negative_prompt_embeds": torch.randn(1, 7, 32, generator=g),
            "negative_pooled_prompt_embeds": torch.randn(1, 64, generator=g)}


@pytest.fixture(scope="module", params=["static-shift", "dynamic-shift"])
def saved(request, tmp_path_factory):
    pipe = tiny_sd3()
    if request.param == "dynamic-shift":
        from diffusers import FlowMatchEulerDiscreteScheduler

        pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=64, max_image_seq_len=1024)
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp(request.param) / "sd3"
    pipe.save_pretrained(folder)
    return pipe, folder


@pytest.mark.parametrize("guidance", [1.0, 3.5])
def test_unconstrained_sample_equals_the_diffusers_pipeline(saved, guidance):
    pipe, folder = saved
    den = FlowMatchDenoiser.from_pretrained(folder).condition(guidance_scale=guidance, **_embeds())
    latents = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(1))
    ours = cd.ConstrainedSampler(den, steps=6, inner_steps=0).sample(None, x_T=latents, progress=False).sample
    # diffusers does not repeat passed-in negative embeddings per image: give it batch-2 embeddings
    batch2 = {k: v.repeat(2, *([1] * (v.ndim - 1))) for k, v in _embeds().items()}
    ref = pipe(guidance_scale=guidance, num_inference_steps=6, latents=latents.clone(), output_type="latent",
               height=den.height, width=den.width, **batch2).images
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()))


def test_latent_inpainting_with_a_batch_of_different_masks(saved):
    _, folder = saved
    den = FlowMatchDenoiser.from_pretrained(folder).condition(**{k: v for k, v in _embeds().items() if "negative" not in k})
    H, W = den.height, den.width
    image = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(2)) * 2 - 1
    masks = torch.ones(2, 1, H, W)
    masks[0, :, :, : W // 2] = 0
    masks[1, :, : H // 2, :] = 0
    constraint = cd.constraints.latent_inpainting(den, image, masks)
    x_T = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(3))
    free = cd.ConstrainedSampler(den, steps=5, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    for solver in cd.solvers.names():
        fit = cd.ConstrainedSampler(den, CHEAP.get(solver, solver), steps=5, inner_steps=5).sample(constraint, x_T=x_T, progress=False)
        assert bool((fit.final_residual * 10 <= free.final_residual).all()), (solver, fit.final_residual, free.final_residual)


def test_clear_errors(saved):
    pipe, folder = saved
    with pytest.raises(ValueError, match="holds a StableDiffusion3Pipeline; expected one of StableDiffusionPipeline"):
        cd.StableDiffusionDenoiser.from_pretrained(folder)
    den = FlowMatchDenoiser.from_pipeline(pipe)
    with pytest.raises(ValueError, match="prompt: this pipeline has no text encoders"):
        den.condition(prompt="a cat")
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        den.condition(prompt_embeds=_embeds()["prompt_embeds"])
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        den.condition(guidance_scale=2.0, prompt_embeds=_embeds()["prompt_embeds"], pooled_prompt_embeds=_embeds()["pooled_prompt_embeds"])
    with pytest.raises(ValueError, match="width=31 is not divisible"):
        FlowMatchDenoiser.from_pipeline(pipe, width=31)
    with pytest.raises(ValueError, match="bind the conditioning first"):
        cd.ConstrainedSampler(den, steps=2, inner_steps=0).sample(None, progress=False)


def _pack(x: torch.Tensor) -> torch.Tensor:
    B, C, h, w = x.shape
    return x.reshape(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, (h // 2) * (w // 2), C * 4)


def _unpack(x: torch.Tensor, C: int, h: int, w: int) -> torch.Tensor:
    return x.reshape(x.shape[0], h // 2, w // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(x.shape[0], C, h, w)


@pytest.fixture(scope="module", params=["flux-dev-like", "flux-true-cfg"])
def saved_flux(request, tmp_path_factory):
    pipe = tiny_flux(guidance_embeds=request.param == "flux-dev-like")
    pipe.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp(request.param) / "flux"
    pipe.save_pretrained(folder)
    return pipe, folder


def _flux_embeds():
    g = torch.Generator().manual_seed(0)
    return {"prompt_embeds": torch.randn(1, 7, 32, generator=g), "pooled_prompt_embeds": torch.randn(1, 32, generator=g),
            "negative_prompt_embeds": torch.randn(1, 7, 32, generator=g),
            "negative_pooled_prompt_embeds": torch.randn(1, 32, generator=g)}


@pytest.mark.parametrize("guidance", [1.0, 3.5])
def test_flux_sample_equals_the_diffusers_pipeline(saved_flux, guidance):
    pipe, folder = saved_flux
    den = cd.FlowMatchDenoiser.from_pretrained(folder, height=32, width=32)
    assert type(den).__name__ == "FluxDenoiser" and den.sample_shape == (4, 16, 16)
    e = _flux_embeds()
    if den.distilled:
        den = den.condition(prompt_embeds=e["prompt_embeds"], pooled_prompt_embeds=e["pooled_prompt_embeds"], guidance_scale=guidance)
        extra = {"guidance_scale": guidance}
    else:
        den = den.condition(guidance_scale=guidance, **e)
        extra = {"true_cfg_scale": guidance, "negative_prompt_embeds": e["negative_prompt_embeds"],
                 "negative_pooled_prompt_embeds": e["negative_pooled_prompt_embeds"]}
    latents = torch.randn(1, *den.sample_shape, generator=torch.Generator().manual_seed(1))
    ours = cd.ConstrainedSampler(den, steps=5, inner_steps=0).sample(None, x_T=latents, progress=False).sample
    ref = pipe(prompt_embeds=e["prompt_embeds"], pooled_prompt_embeds=e["pooled_prompt_embeds"], num_inference_steps=5,
               latents=_pack(latents), output_type="latent", height=32, width=32, **extra).images
    ref = _unpack(ref, *den.sample_shape)
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()))


def test_flux_latent_inpainting_sees_unpacked_latents(saved_flux):
    _, folder = saved_flux
    e = _flux_embeds()
    den = cd.FlowMatchDenoiser.from_pretrained(folder, height=32, width=32).condition(
        prompt_embeds=e["prompt_embeds"], pooled_prompt_embeds=e["pooled_prompt_embeds"])
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    masks = torch.ones(2, 1, 32, 32)
    masks[0, :, :, :16] = 0
    masks[1, :, :16, :] = 0
    constraint = cd.constraints.latent_inpainting(den, image, masks)
    assert constraint.mask.shape == (2, 1, 16, 16)
    x_T = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(3))
    free = cd.ConstrainedSampler(den, steps=5, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(den, "inexact-newton", steps=5, inner_steps=5).sample(constraint, x_T=x_T, progress=False)
    assert bool((fit.final_residual * 10 <= free.final_residual).all()), (fit.final_residual, free.final_residual)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_exact_jvp_runs_natively_on_the_transformers(kind, recwarn):
    """Forward-mode AD through the transformers' fused attention (no fallback), equal to the other two."""
    g = torch.Generator().manual_seed(0)
    pipe, pooled = (tiny_sd3(), 64) if kind == "sd3" else (tiny_flux(True), 32)
    den = cd.FlowMatchDenoiser.from_pipeline(pipe, height=32, width=32).condition(
        prompt_embeds=torch.randn(1, 7, 32, generator=g), pooled_prompt_embeds=torch.randn(1, pooled, generator=g))
    x = torch.randn(1, *den.sample_shape, generator=g)
    e, t = torch.randn_like(x), den.timesteps(5)[2]
    with torch.no_grad():
        x0 = den(x, t)
    d_fd = cd.InexactNewton().direction(den, x, t, e, x0)
    d_fwd = cd.ExactJVP("forward").direction(den, x, t, e, x0)
    solver = cd.ExactJVP("double-backward")
    leaf = x.clone().requires_grad_(True)
    with torch.enable_grad(), solver.evaluation_context():
        x0_graph = den(leaf, t)
    d_dbl = solver.direction(den, leaf, t, e, x0_graph)
    assert not [w for w in recwarn if "double-backward" in str(w.message)]
    assert float((d_fwd - d_fd).norm() / d_fwd.norm()) < 1e-2
    assert torch.allclose(d_dbl, d_fwd, rtol=1e-4, atol=1e-5 * float(d_fwd.abs().max()))


def _pipeline_sigmas(pipe, den, steps: int) -> torch.Tensor:
    """The sigmas the pipeline sets for ``steps``, on a fresh scheduler from its configuration."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    config, (h, w), p = scheduler.config, den.sample_shape[-2:], den.patch
    mu = calculate_shift((h // p) * (w // p), config.base_image_seq_len, config.max_image_seq_len, config.base_shift,
                         config.max_shift)
    if isinstance(den, FluxDenoiser):
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    else:
        scheduler.set_timesteps(steps, **({"mu": mu} if config.use_dynamic_shifting else {}))
    return scheduler.sigmas.double()


@pytest.mark.parametrize("kind", ["sd3-static", "sd3-dynamic", "flux"])
def test_grid_is_the_pipelines_without_touching_its_scheduler(kind):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = tiny_flux(True) if kind == "flux" else tiny_sd3()
    if kind == "sd3-dynamic":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=64, max_image_seq_len=1024)
    before = (pipe.scheduler.sigmas.clone(), getattr(pipe.scheduler, "num_inference_steps", None))
    den = FlowMatchDenoiser(pipe, height=32, width=32)  # the class itself dispatches, as from_pipeline does
    assert type(den) is (FluxDenoiser if kind == "flux" else SD3Denoiser) and isinstance(den, FlowMatchDenoiser)
    assert den.final_alpha_sigma() == (1.0, 0.0)  # before any grid: no call-order dependency
    for steps in (6, 2, 6, 13):
        grid = den.grid(steps)
        ref = _pipeline_sigmas(pipe, den, steps)
        assert torch.equal(grid.sigma, ref) and torch.equal(grid.times, ref[:-1]) and grid.point(steps) == (1.0, 0.0)
    assert torch.equal(pipe.scheduler.sigmas, before[0]) and getattr(pipe.scheduler, "num_inference_steps", None) == before[1]


def test_explicit_classes_take_only_their_family(saved):
    pipe, folder = saved
    assert type(SD3Denoiser.from_pretrained(folder)) is SD3Denoiser
    assert type(FlowMatchDenoiser.from_pipeline(pipe)) is SD3Denoiser
    with pytest.raises(ValueError, match="holds a StableDiffusion3Pipeline; expected one of FluxPipeline"):
        FluxDenoiser.from_pretrained(folder)
