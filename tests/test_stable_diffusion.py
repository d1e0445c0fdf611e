"""The Stable Diffusion adapter on tiny random pipelines saved to and loaded from a folder."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd

# every registered solver runs; exact Newton with a 3-dimensional Krylov space keeps it cheap
CHEAP = {"exact-newton": {"name": "exact-newton", "iterations": 3}}

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
from tiny_pipelines import tiny_sd


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def saved(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    pipe = tiny_sd(tmp, prediction_type=request.param)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp / "sd")
    return pipe, tmp / "sd"


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_unconstrained_sample_equals_the_diffusers_pipeline(saved, guidance):
    pipe, folder = saved
    den = cd.StableDiffusionDenoiser.from_pretrained(folder).condition(prompt="a photo of a cat", guidance_scale=guidance)
    latents = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(0))
    ours = cd.ConstrainedSampler(den, steps=6, inner_steps=0).sample(None, x_T=latents, progress=False).sample
    ref = pipe(prompt="a photo of a cat", num_inference_steps=6, guidance_scale=guidance, latents=latents.clone(),
               output_type="latent", num_images_per_prompt=2).images
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()))


def test_prompt_embeds_path_matches_the_prompt_path(saved):
    pipe, folder = saved
    den = cd.StableDiffusionDenoiser.from_pretrained(folder)
    pos, neg = pipe.encode_prompt("a red house", "cpu", 1, True, negative_prompt="blue sky")
    by_text = den.condition(prompt="a red house", negative_prompt="blue sky", guidance_scale=3.0)
    by_embeds = den.condition(prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=3.0)
    x, t = torch.randn(1, *den.sample_shape), den.timesteps(5)[2]
    assert torch.allclose(by_text.predict_x0(x, t), by_embeds.predict_x0(x, t))


def _image_and_mask(den, batch: int = 1):
    H, W = den.height, den.width
    image = torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1
    masks = torch.ones(batch, 1, H, W)
    masks[0, :, :, : W // 2] = 0
    if batch > 1:
        masks[1, :, : H // 2, :] = 0
    return image, masks


def test_latent_inpainting_reduces_the_residual_tenfold_for_a_batch_of_different_masks(saved):
    _, folder = saved
    den = cd.StableDiffusionDenoiser.from_pretrained(folder).condition(prompt="a photo of a dog")
    image, masks = _image_and_mask(den, batch=2)
    constraint = cd.constraints.latent_inpainting(den, image, masks)
    assert constraint.mask.shape == (2, 1, *den.sample_shape[-2:])
    assert torch.equal(constraint.mask[0, 0, :, : den.sample_shape[-1] // 2], torch.zeros(den.sample_shape[-2], den.sample_shape[-1] // 2))
    x_T = torch.randn(2, *den.sample_shape, generator=torch.Generator().manual_seed(3))
    free = cd.ConstrainedSampler(den, steps=5, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    for solver in cd.solvers.names():
        fit = cd.ConstrainedSampler(den, CHEAP.get(solver, solver), steps=5, inner_steps=5).sample(constraint, x_T=x_T, progress=False)
        assert bool((fit.final_residual * 10 <= free.final_residual).all()), (solver, fit.final_residual, free.final_residual)
    assert fit.images.shape == (2, 3, den.height, den.width)


def test_decoded_pixel_constraint_reduces_the_residual_without_denoiser_backwards(saved):
    _, folder = saved
    den = cd.StableDiffusionDenoiser.from_pretrained(folder).condition(prompt="")
    image, masks = _image_and_mask(den)
    constraint = cd.constraints.DecodedConstraint(cd.Inpainting(image, masks), den.codec)
    x_T = torch.randn(1, *den.sample_shape, generator=torch.Generator().manual_seed(4))
    free = cd.ConstrainedSampler(den, steps=4, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(den, "inexact-newton", steps=4, inner_steps=3).sample(constraint, x_T=x_T, progress=False)
    assert float(fit.final_residual) < float(free.final_residual)
    assert fit.nbe == 0  # the backward goes through the VAE decoder only, never the denoiser


def test_vae_newton_error_is_the_encoder_jvp(saved):
    import torch.autograd.forward_ad as fwAD

    from constrained_diffusion.solvers.exact_jvp import forward_ad_compatible

    _, folder = saved
    den = cd.StableDiffusionDenoiser.from_pretrained(folder)
    image, masks = _image_and_mask(den)
    pixel = cd.Inpainting(image, masks)
    constraint = cd.constraints.EncodedConstraint(pixel, den.codec, h=1e-3)
    z = torch.randn(1, *den.sample_shape, generator=torch.Generator().manual_seed(5))
    e, residual = constraint.error_and_residual(z)
    with torch.no_grad():
        x = den.codec.decode(z)
        e_pix = pixel.error(x)
        with fwAD.dual_level(), forward_ad_compatible():
            jvp = fwAD.unpack_dual(den.codec.encode(fwAD.make_dual(x, e_pix))).tangent
    assert torch.allclose(e, jvp, rtol=0.05, atol=0.05 * float(jvp.abs().max()))
    assert torch.allclose(residual, pixel.residual(x))


def test_clear_errors(saved, tmp_path):
    pipe, folder = saved
    with pytest.raises(FileNotFoundError, match="no such folder"):
        cd.StableDiffusionDenoiser.from_pretrained(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no diffusers pipeline"):
        cd.StableDiffusionDenoiser.from_pretrained(tmp_path / "empty")
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    other = DDPMPipeline(unet=UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4,
                                          down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")),
                         scheduler=DDPMScheduler())
    other.save_pretrained(tmp_path / "ddpm")
    with pytest.raises(ValueError, match="holds a DDPMPipeline"):
        cd.StableDiffusionDenoiser.from_pretrained(tmp_path / "ddpm")
    with pytest.raises(ValueError, match="height=21 is not divisible by the VAE factor 2"):
        cd.StableDiffusionDenoiser.from_pipeline(pipe, height=21, width=32)
    den = cd.StableDiffusionDenoiser.from_pipeline(pipe)
    with pytest.raises(ValueError, match="does not match the denoiser's latents"):
        cd.constraints.latent_inpainting(den, torch.zeros(1, 3, 20, 20), torch.ones(1, 1, 20, 20))
    with pytest.raises(ValueError, match="mask of size"):
        cd.constraints.latent_inpainting(den, torch.zeros(1, 3, 32, 32), torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="bind a prompt first"):
        cd.ConstrainedSampler(den, steps=2, inner_steps=0).sample(None, progress=False)
    bare = tiny_sd(tmp_path, with_text=False)
    with pytest.raises(ValueError, match="prompt: this pipeline has no text encoder"):
        cd.StableDiffusionDenoiser.from_pipeline(bare).condition(prompt="a cat")


def test_the_schedule_is_ddims_and_the_pipelines_scheduler_is_never_touched(saved):
    from diffusers import DDIMScheduler

    pipe, _ = saved
    before = (pipe.scheduler.timesteps.clone(), pipe.scheduler.num_inference_steps)
    den = cd.StableDiffusionDenoiser.from_pipeline(pipe)
    assert isinstance(den.schedule, cd.VPSchedule) and den.space == "latent"
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    for steps in (7, 3, 50, 7):  # any order, any number of times
        grid = den.grid(steps)
        ddim.set_timesteps(steps)
        assert torch.equal(grid.times, ddim.timesteps)
        assert torch.allclose(grid.alpha[:-1] ** 2, ddim.alphas_cumprod[grid.times].double(), rtol=1e-12)
        assert torch.isclose(grid.alpha[-1] ** 2, ddim.final_alpha_cumprod.double())  # set_alpha_to_one=False
    bound = den.condition(prompt="a cat")
    assert bound.schedule is den.schedule and bound.grid(5) == den.grid(5)
    assert den.final_alpha_sigma() == den.schedule.final_alpha_sigma()
    assert torch.equal(pipe.scheduler.timesteps, before[0]) and pipe.scheduler.num_inference_steps == before[1]
