"""The paper's presets (`paper-inpainting`, `paper-sr8`) against an independent transcription of
the reference notebooks' loop (cvlab-stonybrook/fast-constrained-sampling,
stable-diffusion/inpaint.ipynb and superres.ipynb), written here in plain torch on the tiny
Stable Diffusion pipeline's own UNet and VAE. Two of the notebooks' quirks are deliberately
not reproduced (docs/paper.md): the UNet receives the grid index itself (the notebooks pass
``t + 1`` against ``abar[t]``) and the constraint image is encoded by the VAE's mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import constrained_diffusion as cd
from tests.tiny_pipelines import tiny_sd

H = 0.005


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper-sd")
    tiny_sd(tmp).save_pretrained(tmp / "sd")
    # float64: the comparison then checks the math, not float32 rounding (abar_999 ~ 0.005 makes
    # x0 = (x - sigma eps) / alpha amplify it about 15 times per evaluation)
    return cd.StableDiffusionDenoiser.from_pretrained(tmp / "sd", torch_dtype=torch.float64).condition(prompt="")


@pytest.fixture(scope="module")
def image(sd):
    return torch.rand(1, 3, sd.height, sd.width, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1


# --- the reference loop, transcribed ---------------------------------------------------------
class Reference:
    """The notebooks' loop: x0 = (x - sqrt(1 - ab) eps) / sqrt(ab); K inner steps
    x <- x + lr_k d / max|d|, d = (x0(x + h' e) - x0) / h', h' = h / max|e|; then
    x <- sqrt(ab_prev) x0 + sqrt(1 - ab_prev - s2) eps + sqrt(s2) z, s2 = eta^2 beta_t (1 - ab_prev) / (1 - ab_t)."""

    def __init__(self, pipe, steps: int = 20):
        self.pipe = pipe
        with torch.no_grad():
            self.cond = pipe.encode_prompt("", torch.device("cpu"), 1, False)[0]
        T = pipe.scheduler.config.num_train_timesteps
        stride = T // steps
        self.times = list(range(T - 1, -1, -stride))  # 999, 949, ..., 49
        self.abar = pipe.scheduler.alphas_cumprod.double()
        self.betas = pipe.scheduler.betas.double()
        self.final = self.abar[0]  # set_alpha_to_one=False in the tiny pipeline

    def eps(self, x, t):
        with torch.no_grad():
            return self.pipe.unet(x, torch.tensor(t), encoder_hidden_states=self.cond).sample

    def x0(self, x, t):
        ab = float(self.abar[t])
        eps = self.eps(x, t)
        return (x - (1 - ab) ** 0.5 * eps) / ab**0.5, eps

    def run(self, x, error, lrs, eta, generator, record):
        """``error(x0) -> e``; returns the last x0 and appends each step's final x0 to ``record``."""
        for i, t in enumerate(self.times):
            ab = float(self.abar[t])
            ab_prev = float(self.abar[self.times[i + 1]]) if i + 1 < len(self.times) else float(self.final)
            s2 = eta**2 * float(self.betas[t]) * (1 - ab_prev) / (1 - ab)
            x0, eps = self.x0(x, t)
            for lr in lrs:
                e = error(x0)
                hp = H / e.abs().max()
                x0_h, _ = self.x0(x + hp * e, t)
                d = (x0_h - x0) / hp
                x = x + lr * d / d.abs().max()
                x0, eps = self.x0(x, t)
            record.append(x0)
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
            x = ab_prev**0.5 * x0 + (1 - ab_prev - s2) ** 0.5 * eps + s2**0.5 * z
        return x0


def inpainting_error(pipe, image, mask):
    vae, sf = pipe.vae, pipe.vae.config.scaling_factor
    with torch.no_grad():
        y = vae.encode(image * mask).latent_dist.mean * sf
    f = image.shape[-1] // y.shape[-1]
    m = (F.avg_pool2d(mask, f) >= 1).float()
    return lambda x0: m * (y - x0)


def sr_error(pipe, y, factor):
    vae, sf = pipe.vae, pipe.vae.config.scaling_factor

    def error(x0):
        z = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.linalg.norm(y - F.avg_pool2d(vae.decode(z / sf).sample, factor))
            (g,) = torch.autograd.grad(loss, z)
        e = -g
        return e / e.abs().max()

    return error


# --- the presets -----------------------------------------------------------------------------
def _library(sd, name, pixel, x_T, **overrides):
    recipe = cd.recipes.get(name, **overrides)
    steps = []
    res = recipe.sampler(sd).sample(recipe.constraint(pixel, sd), x_T=x_T, progress=False,
                                    generator=torch.Generator().manual_seed(7), callback=lambda s: steps.append(s.x0))
    return res, steps


def _mask(sd):
    mask = torch.zeros(1, 1, sd.height, sd.width, dtype=torch.float64)
    mask[..., : sd.width // 2] = 1
    return mask


def _x_T(sd):
    return torch.randn(1, *sd.sample_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_the_presets_sample_on_the_trailing_grid_without_changing_the_denoiser(sd):
    sampler = cd.recipes.get("paper-inpainting").sampler(sd)
    assert sampler.denoiser.timesteps(20).tolist() == list(range(999, 0, -50))
    assert sd.timesteps(20).tolist()[0] == 951  # the pipeline's own ("leading") grid is untouched
    assert sd.pipe.scheduler.config.timestep_spacing == "leading"
    cfg = sampler.config
    assert (cfg.inner_steps, cfg.step_scale, cfg.eta, cfg.noise, cfg.output, cfg.solver.h) == (
        5, (0.5, 0.1), 1.0, "one-step-posterior", "last-x0", 0.005)
    sr = cd.recipes.get("paper-sr8").config
    assert (sr.inner_steps, sr.step_scale) == (10, 0.1)


@pytest.mark.parametrize(("eta", "n"), [(0.0, 20), (1.0, 5)], ids=["deterministic", "stochastic"])
def test_paper_inpainting_equals_the_reference_loop(sd, image, eta, n):
    mask = _mask(sd)
    x_T = _x_T(sd)
    res, steps = _library(sd, "paper-inpainting", cd.Inpainting(image, mask), x_T, eta=eta, steps=n)
    ref_steps: list[torch.Tensor] = []
    ref = Reference(sd.pipe, n).run(x_T.clone(), inpainting_error(sd.pipe, image, mask), [0.5, 0.4, 0.3, 0.2, 0.1], eta,
                                 torch.Generator().manual_seed(7), ref_steps)
    first = float((steps[0] - ref_steps[0]).abs().max())
    whole = float((res.sample - ref).abs().max())
    print(f"paper-inpainting eta={eta}: first step {first:.2e}, whole run {whole:.2e}")
    assert first < 1e-4
    assert whole < 1e-4
    assert torch.equal(res.sample, steps[-1])  # output="last-x0"
    torch.testing.assert_close(res.images, sd.decode(res.sample))


def test_paper_sr8_equals_the_reference_loop(sd, image):
    factor = 8
    y = F.avg_pool2d(image, factor)
    x_T = _x_T(sd)
    res, steps = _library(sd, "paper-sr8", cd.SuperResolution(y, factor, kernel="box"), x_T, eta=0.0, steps=4)
    ref_steps: list[torch.Tensor] = []
    ref = Reference(sd.pipe, 4).run(x_T.clone(), sr_error(sd.pipe, y, factor), [0.1] * 10, 0.0,
                                 torch.Generator().manual_seed(7), ref_steps)
    first = float((steps[0] - ref_steps[0]).abs().max())
    whole = float((res.sample - ref).abs().max())
    print(f"paper-sr8 eta=0: first step {first:.2e}, whole run {whole:.2e}")
    assert first < 1e-4
    assert whole < 1e-4


def test_the_stochastic_preset_is_seeded(sd, image):
    pixel = cd.Inpainting(image, _mask(sd))
    recipe = cd.recipes.get("paper-inpainting", inner_steps=1, steps=4)
    run = lambda seed: recipe.sampler(sd).sample(recipe.constraint(pixel, sd), x_T=_x_T(sd), progress=False,  # noqa: E731
                                                 generator=torch.Generator().manual_seed(seed)).sample
    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_one_step_posterior_noise_needs_a_variance_preserving_schedule():
    model = cd.GaussianDenoiser.smooth((1, 4, 4), schedule=cd.FlowSchedule())  # built here: the flow schedule is the point
    with pytest.raises(ValueError, match="one-step-posterior"):
        cd.ConstrainedSampler(model, steps=2, inner_steps=0, eta=1.0, noise="one-step-posterior").sample(progress=False)
    with pytest.raises(ValueError, match="timestep_spacing"):
        cd.recipes.get("paper-sr8").sampler(model)


def test_paper_inpainting_needs_an_inpainting_constraint(sd, image):
    with pytest.raises(TypeError, match="Inpainting"):
        cd.recipes.get("paper-inpainting").constraint(cd.SuperResolution(F.avg_pool2d(image, 8), 8), sd)


def test_the_sd_adapter_takes_a_timestep_spacing(sd):
    trailing = cd.StableDiffusionDenoiser.from_pipeline(sd.pipe, timestep_spacing="trailing")
    assert trailing.timesteps(20).tolist() == list(range(999, 0, -50))
    copy = sd.with_timestep_spacing("trailing")
    assert copy.timesteps(20).tolist() == trailing.timesteps(20).tolist() and copy.prompt_embeds is sd.prompt_embeds
    assert sd.timesteps(20).tolist()[0] == 951
    with pytest.raises(ValueError, match="timestep_spacing"):
        sd.with_timestep_spacing("bogus")  # type: ignore[arg-type]


# --- paper-style: the CLIP Gram loss through decoder and CLIP, with classifier-free guidance ---
W_CFG = 2.0  # the notebook's w: eps = (1 + w) eps_c - w eps_u
CAPTION = "a photo of a cat"


@pytest.fixture(scope="module")
def tiny_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                              image_size=16, patch_size=4)
    return CLIPVisionModel(config).double().eval().requires_grad_(False)


class GuidedReference(Reference):
    """The style notebook's model call: one forward of ``[x; x]`` with ``[cond; uncond]`` and
    ``(1 + w) eps_c - w eps_u``."""

    def __init__(self, pipe, steps: int, w: float):
        super().__init__(pipe, steps)
        with torch.no_grad():
            self.cond = pipe.encode_prompt(CAPTION, torch.device("cpu"), 1, False)[0]
            self.uncond = pipe.encode_prompt("", torch.device("cpu"), 1, False)[0]
        self.w = w

    def eps(self, x, t):
        with torch.no_grad():
            both = self.pipe.unet(torch.cat([x, x]), torch.tensor(t), encoder_hidden_states=torch.cat([self.cond, self.uncond])).sample
        eps_c, eps_u = both.chunk(2)
        return (1 + self.w) * eps_c - self.w * eps_u


def style_error(pipe, vision, style_image):
    """The notebook's style error, transcribed: CLIP hidden state after block 3 (class token
    dropped) of the bicubically resized, normalised image; G = F^T F; e = -grad ||G_ref - G||_F."""
    from cd_clip_style import CLIP_MEAN, CLIP_STD

    vae, sf, size = pipe.vae, pipe.vae.config.scaling_factor, vision.config.image_size
    mean = torch.tensor([2 * m - 1 for m in CLIP_MEAN], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([2 * s for s in CLIP_STD], dtype=torch.float64).view(1, 3, 1, 1)

    def gram(img):
        img = F.interpolate(img, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        feats = vision(pixel_values=(img - mean) / std, output_hidden_states=True).hidden_states[3][0, 1:]
        return feats.T @ feats

    with torch.no_grad():
        g_ref = gram(style_image)

    def error(x0):
        z = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.linalg.norm(g_ref - gram(vae.decode(z / sf).sample))
            (g,) = torch.autograd.grad(loss, z)
        e = -g
        return e / e.abs().max()

    return error


def test_paper_style_is_the_reference_loop_settings():
    recipe = cd.recipes.get("paper-style")
    cfg = recipe.config
    assert (cfg.inner_steps, cfg.step_scale, cfg.eta, cfg.noise, cfg.output, cfg.solver.h, recipe.guidance_scale, recipe.latent) == (
        5, (0.5, 0.1), 1.0, "one-step-posterior", "last-x0", 0.005, 1 + W_CFG, "decoded")


@pytest.mark.parametrize(("eta", "n"), [(0.0, 4), (1.0, 4)], ids=["deterministic", "stochastic"])  # n divides T = 1000
def test_paper_style_equals_the_reference_loop(sd, image, tiny_vision, eta, n):
    cd_clip_style = pytest.importorskip("cd_clip_style")
    recipe = cd.recipes.get("paper-style", eta=eta, steps=n)
    model = recipe.condition(sd, prompt=CAPTION)
    assert model.guidance_scale == 1 + W_CFG
    pixel = cd_clip_style.CLIPStyle.paper(image, tiny_vision)
    x_T = _x_T(sd)
    steps: list[torch.Tensor] = []
    res = recipe.sampler(model).sample(recipe.constraint(pixel, model), x_T=x_T, progress=False,
                                       generator=torch.Generator().manual_seed(7), callback=lambda s: steps.append(s.x0))
    ref_steps: list[torch.Tensor] = []
    ref = GuidedReference(sd.pipe, n, W_CFG).run(x_T.clone(), style_error(sd.pipe, tiny_vision, image), [0.5, 0.4, 0.3, 0.2, 0.1],
                                                 eta, torch.Generator().manual_seed(7), ref_steps)
    first = float((steps[0] - ref_steps[0]).abs().max())
    whole = float((res.sample - ref).abs().max())
    print(f"paper-style eta={eta}: first step {first:.2e}, whole run {whole:.2e}")
    assert first < 1e-4
    assert whole < 1e-4
    assert float(res.final_residual.max()) < float(pixel.loss(sd.decode(x_T)).max())  # the style loss went down


def test_paper_style_refuses_a_denoiser_bound_at_another_guidance_scale(sd, gaussian32):
    recipe = cd.recipes.get("paper-style")
    with pytest.raises(ValueError, match="guidance_scale=3"):
        recipe.sampler(sd)  # bound with the empty prompt at guidance 1
    assert recipe.with_config(guidance_scale=None).sampler(sd).denoiser.guidance_scale == 1.0
    with pytest.raises(ValueError, match="guidance_scale"):
        recipe.with_config(guidance_scale=-1.0)
    with pytest.raises(TypeError, match="takes no prompt"):
        recipe.condition(gaussian32)
