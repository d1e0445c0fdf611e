"""Recipes (the paper and its baselines) end to end, and the engine hooks they use."""

from __future__ import annotations

import ast

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd

pytest.importorskip("diffusers")
from tiny_pipelines import tiny_sd  # noqa: E402

# steps for the tests (the published defaults run 100-1000 steps)
FAST = {"inexact-newton": {}, "dps": {"steps": 30}, "psld": {"steps": 30}, "mpgd": {"steps": 30}, "freedom": {"steps": 30}}
# residual of the result over the unconstrained one, at most (FreeDoM's energy guidance is
# deliberately gentle: each guidance step is 0.2x the sampler's own update)
RATIO = {"inexact-newton": 0.25, "dps": 0.25, "psld": 0.25, "mpgd": 0.25, "freedom": 0.8}


def _problem(model: cd.Denoiser, seed: int = 0) -> cd.Inpainting:
    truth = model.sample_prior(1, torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, 1, *model.sample_shape[-2:], dtype=truth.dtype)
    mask[..., : model.sample_shape[-1] // 2] = 1
    return cd.Inpainting(truth, mask)


def test_every_published_method_is_a_recipe():
    assert cd.recipes.names() == sorted(["dps", "freedom", "inexact-newton", "mpgd", "paper-inpainting", "paper-sr8", "paper-style",
                                         "psld", *(r.name for r in cd.recipes.METHODS)])
    for name in cd.recipes.names():
        recipe = cd.recipes.get(name)
        text = recipe.describe()
        assert text.startswith(f"{name}: {recipe.summary} ({recipe.reference}). Config: ")
        # the description carries the whole configuration: it rebuilds the recipe's config
        described = ast.literal_eval(text.split(". Config: ", 1)[1])
        assert cd.SamplerConfig.model_validate(described) == recipe.config
    dps = cd.recipes.get("dps")
    assert (dps.config.target, dps.config.step_rule, dps.config.solver.name) == ("x_prev", "residual", "gradient-descent")
    assert cd.recipes.get("mpgd").config.target == "x0"
    assert cd.recipes.get("freedom").config.time_travel > 0
    paper = cd.recipes.get("inexact-newton").config
    assert (paper.steps, paper.inner_steps, paper.step_scale, paper.solver.h) == (20, 5, (0.5, 0.1), 0.005)


def test_recipe_options_are_read_only_and_overridable():
    psld = cd.recipes.get("psld", gamma=0.5, steps=10)
    assert psld.options["gamma"] == 0.5 and psld.config.steps == 10
    assert cd.recipes.get("psld").options["gamma"] == 0.1
    with pytest.raises(TypeError):
        psld.options["gamma"] = 1.0  # type: ignore[index]
    with pytest.raises(ValueError, match="gamma must be a number >= 0"):
        cd.recipes.get("psld", gamma=-1)
    with pytest.raises(ValueError, match="exists"):
        cd.recipes.register(cd.recipes.get("dps"))


def test_recipe_overrides_are_validated_and_unknown_names_listed():
    assert cd.recipes.get("dps", steps=7).config.steps == 7
    assert cd.recipes.get("dps").config.steps == 1000  # the preset itself is unchanged
    with pytest.raises(ValidationError, match="steps"):
        cd.recipes.get("dps", steps=0)
    with pytest.raises(ValidationError, match="inner_steps must be 0 or 1"):
        cd.recipes.get("dps", inner_steps=3)
    with pytest.raises(ValueError, match="unknown recipe 'dsp'.*dps"):
        cd.recipes.get("dsp")


@pytest.mark.parametrize("name", list(FAST))
def test_recipe_reduces_the_residual_on_the_analytic_model(gaussian, name):
    recipe = cd.recipes.get(name, **FAST[name])
    pixel = _problem(gaussian)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    free = cd.ConstrainedSampler(gaussian, steps=recipe.config.steps, inner_steps=0).sample(pixel, generator=gen(), progress=False)
    fit = recipe.sampler(gaussian).sample(recipe.constraint(pixel, gaussian), generator=gen(), progress=False)
    assert float(pixel.residual(fit.sample)) < RATIO[name] * float(free.final_residual), (name, fit.final_residual, free.final_residual)


def test_costs_match_the_update_rules(gaussian):
    pixel = _problem(gaussian)
    run = lambda name, **kw: cd.recipes.get(name, **kw).sampler(gaussian).sample(pixel, generator=torch.Generator().manual_seed(1), progress=False)  # noqa: E731
    dps = run("dps", steps=10)
    assert (dps.nfe, dps.nbe) == (10, 10)  # one forward with a graph and one backward per step
    mpgd = run("mpgd", steps=10)
    assert (mpgd.nfe, mpgd.nbe) == (10, 0)  # no denoiser Jacobian at all
    freedom = run("freedom", steps=10)  # steps 3..6 lie in the window (0.3, 0.7): 3 extra passes each
    assert (freedom.nfe, freedom.nbe) == (10 + 4 * 3, 10 + 4 * 3)
    newton = run("inexact-newton", steps=10)
    assert (newton.nfe, newton.nbe) == (10 * (1 + 2 * 5), 0)


def test_window_limits_the_constrained_steps(gaussian):
    pixel = _problem(gaussian)
    res = cd.ConstrainedSampler(gaussian, steps=10, inner_steps=2, window=(0.5, 1.0)).sample(pixel, generator=torch.Generator().manual_seed(0), progress=False)
    assert res.nfe == 5 + 5 * (1 + 2 * 2)
    assert bool((res.residuals[5:, -1] < res.residuals[5:, 0]).all())  # inside: every step corrects
    with pytest.raises(ValidationError, match="window"):
        cd.SamplerConfig(window=(0.6, 0.2))


def test_time_travel_is_seeded(gaussian):
    pixel = _problem(gaussian)
    recipe = cd.recipes.get("freedom", steps=10)
    a = recipe.sampler(gaussian).sample(pixel, generator=torch.Generator().manual_seed(5), progress=False)
    b = recipe.sampler(gaussian).sample(pixel, generator=torch.Generator().manual_seed(5), progress=False)
    c = recipe.sampler(gaussian).sample(pixel, generator=torch.Generator().manual_seed(6), progress=False)
    assert torch.equal(a.sample, b.sample) and not torch.equal(a.sample, c.sample)


def test_psld_without_a_codec_glues_with_the_identity():
    y = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mask = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    pixel = cd.Inpainting(y, mask)
    psld = cd.PSLDConstraint(pixel, None, omega=1.0, gamma=0.5)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r = (mask * (y - x)).flatten(1).norm(dim=1)
    assert torch.allclose(psld.loss(x), 1.5 * r)  # A^T y + (I - A^T A) x - x = m (y - x)
    assert torch.allclose(psld.residual(x), r)
    with pytest.raises(TypeError, match="LinearConstraint"):
        cd.PSLDConstraint(cd.ClassGuidance(torch.nn.Linear(16, 3), 1), None)


class LinearCodec:
    """A differentiable stand-in for a VAE: z (2, 2, 2) <-> x (1, 4, 4)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.dec = torch.randn(16, 8, generator=g, dtype=torch.float64) / 3
        self.enc = torch.linalg.pinv(self.dec)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z.flatten(1) @ self.dec.T).reshape(-1, 1, 4, 4)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.enc.T).reshape(-1, 2, 2, 2)


def test_psld_loss_has_the_right_gradient():
    codec = LinearCodec()
    y = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) - 0.5
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    mask[..., :2] = 1
    psld = cd.PSLDConstraint(cd.Inpainting(y, mask), codec)
    z = torch.randn(2, 2, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: psld.loss(v), (z,))


def test_latent_models_get_the_methods_own_latent_constraint(gaussian):
    import copy

    latent = copy.copy(gaussian)
    latent.codec = LinearCodec()
    pixel = cd.Inpainting(torch.zeros(1, 1, 4, 4, dtype=torch.float64), torch.ones(1, 1, 4, 4, dtype=torch.float64))
    # the latent mask needs a VAE-sized image: paper-inpainting in tests/test_paper_presets.py, the "linear" methods in tests/test_methods.py
    kinds = {name: type(cd.recipes.get(name).constraint(pixel, latent)).__name__ for name in cd.recipes.names()
             if cd.recipes.get(name).latent not in ("latent-mask", "linear")}
    assert kinds == {"dps": "DecodedConstraint", "freedom": "DecodedConstraint", "inexact-newton": "EncodedConstraint",
                     "mpgd": "DecodedConstraint", "psld": "PSLDConstraint",
                     "paper-sr8": "DecodedConstraint", "paper-style": "DecodedConstraint",
                     "daps": "DecodedConstraint", "red-diff": "DecodedConstraint", "flowchef": "DecodedConstraint"}
    assert cd.recipes.get("dps").constraint(pixel, gaussian) is pixel  # pixel models: unchanged


@pytest.fixture(scope="module")
def tiny_diffusers_denoiser(tmp_path_factory):
    """A tiny random diffusers ``UNet2DModel``, saved to a folder and loaded back."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(32, 64), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    folder = tmp_path_factory.mktemp("recipes-unet") / "unet"
    unet.save_pretrained(folder)
    loaded = diffusers.UNet2DModel.from_pretrained(folder).eval().requires_grad_(False)
    return cd.NetworkDenoiser(loaded, cd.VPSchedule.linear(), (3, 16, 16), prediction="epsilon")


@pytest.mark.parametrize("name", list(FAST))
def test_recipe_reduces_the_residual_on_a_tiny_diffusers_model(tiny_diffusers_denoiser, name):
    den = tiny_diffusers_denoiser
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.ones(1, 1, 16, 16)
    mask[..., :8] = 0
    pixel = cd.Inpainting(image, mask)
    recipe = cd.recipes.get(name, **FAST[name])
    x_T = torch.randn(1, *den.sample_shape, generator=torch.Generator().manual_seed(2))
    free = cd.ConstrainedSampler(den, steps=recipe.config.steps, inner_steps=0).sample(pixel, x_T=x_T, progress=False)
    fit = recipe.sampler(den).sample(recipe.constraint(pixel, den), x_T=x_T, progress=False)
    assert float(fit.final_residual) < RATIO[name] * float(free.final_residual), (name, fit.final_residual, free.final_residual)


def _one_step(model, recipe_name, pixel, **overrides):
    """Run one denoising step of a recipe from a fixed x_T; returns (x_T, result)."""
    recipe = cd.recipes.get(recipe_name, steps=1, eta=0.0, time_travel=0, **overrides)
    x_T = torch.randn(1, *model.sample_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return x_T, recipe.sampler(model).sample(recipe.constraint(pixel, model), x_T=x_T, progress=False)


def _ddim(model, x_t, x0, eps=None):
    from constrained_diffusion.sampling.update import ddim_update

    t = model.timesteps(1)[0]
    (a, s), (ap, sp) = model.alpha_sigma(t), model.final_alpha_sigma()
    return ddim_update(x_t, x0, float(a), float(s), float(ap), float(sp), eps=eps)


def _grad_through_denoiser(model, x_T, loss):
    """``(x0, grad_{x_T} loss(D(x_T)))`` at the one-step grid's time, by autograd."""
    x = x_T.clone().requires_grad_(True)
    x0 = model(x, model.timesteps(1)[0])
    (grad,) = torch.autograd.grad(loss(x0).sum(), x)
    return x0.detach(), grad


def test_dps_update_is_ddim_minus_zeta_times_the_gradient_of_the_norm(gaussian):
    pixel = _problem(gaussian)
    x_T, res = _one_step(gaussian, "dps", pixel, step_scale=0.7)
    x0, grad = _grad_through_denoiser(gaussian, x_T, pixel.residual)
    expected = _ddim(gaussian, x_T, x0) - 0.7 * grad
    assert torch.allclose(res.sample, expected, atol=1e-10)


def test_mpgd_update_edits_x0_and_keeps_the_noise_estimate(gaussian):
    pixel = _problem(gaussian)
    x_T, res = _one_step(gaussian, "mpgd", pixel, step_scale=0.3)
    t = gaussian.timesteps(1)[0]
    x0 = gaussian(x_T, t)
    a, s = (float(v) for v in gaussian.alpha_sigma(t))
    eps = (x_T - a * x0) / s
    x = x0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(0.5 * pixel.residual(x).pow(2).sum(), x)
    expected = _ddim(gaussian, x_T, x0 - 0.3 * grad, eps=eps)
    assert torch.allclose(res.sample, expected, atol=1e-10)
    assert res.nbe == 0 and res.nfe == 1


def test_freedom_step_is_rescaled_to_the_sampler_update(gaussian):
    pixel = _problem(gaussian)
    x_T, res = _one_step(gaussian, "freedom", pixel, step_scale=0.2)
    x0, grad = _grad_through_denoiser(gaussian, x_T, lambda v: 0.5 * pixel.residual(v).pow(2))
    unguided = _ddim(gaussian, x_T, x0)
    rho = 0.2 * (unguided - x_T).norm() / grad.norm()
    assert torch.allclose(res.sample, unguided - rho * grad, atol=1e-10)


def test_psld_works_with_a_default_autograd_adjoint(gaussian):
    class ColumnSum(cd.LinearConstraint):  # forward only: the adjoint comes from autograd
        def forward(self, x):
            return x.sum(dim=-2)

    truth = gaussian.sample_prior(1, torch.Generator().manual_seed(0))
    pixel = ColumnSum(truth.sum(dim=-2))
    recipe = cd.recipes.get("psld", steps=20)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    free = cd.ConstrainedSampler(gaussian, steps=20, inner_steps=0).sample(pixel, generator=gen(), progress=False)
    fit = recipe.sampler(gaussian).sample(recipe.constraint(pixel, gaussian), generator=gen(), progress=False)
    assert float(fit.final_residual) < 0.5 * float(free.final_residual)


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_renoise_samples_the_forward_process(kind):
    from constrained_diffusion.sampling.update import renoise

    schedule = cd.VPSchedule.linear() if kind == "vp" else cd.FlowSchedule()
    t, t_prev = schedule.timesteps(10)[3], schedule.timesteps(10)[4]
    (a, s), (ap, sp) = (tuple(float(v) for v in schedule.alpha_sigma(x)) for x in (t, t_prev))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000,), 0.7, dtype=torch.float64)
    x_prev = ap * x0 + sp * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = renoise(x_prev, a, s, ap, sp, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    assert float(x_t.mean()) == pytest.approx(a * 0.7, abs=0.01)
    assert float(x_t.std()) == pytest.approx(s, rel=0.01)


@pytest.fixture(scope="module")
def tiny_sd_denoiser(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipes-sd")
    tiny_sd(tmp).save_pretrained(tmp / "sd")
    return cd.StableDiffusionDenoiser.from_pretrained(tmp / "sd").condition(prompt="")


def test_every_recipe_runs_on_a_latent_model_through_its_vae(tiny_sd_denoiser):
    """The latent paths (decoder backward, PSLD's encoder-decoder gluing, VAE Newton) on a real
    diffusers VAE; a random tiny model, so only that they run and stay finite is checked."""
    den = tiny_sd_denoiser
    H, W = den.height, den.width
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.ones(1, 1, H, W)
    mask[..., : W // 2] = 0
    pixel = cd.Inpainting(image, mask)
    for name in cd.recipes.names():
        recipe = cd.recipes.get(name, steps=3, **({"inner_steps": 2} if name == "inexact-newton" else {}))
        model = den if recipe.guidance_scale is None else recipe.condition(den, prompt="a photo")  # paper-style: CFG 3
        res = recipe.sampler(model).sample(recipe.constraint(pixel, model), generator=torch.Generator().manual_seed(0), progress=False)
        assert res.images.shape == (1, 3, H, W) and bool(res.images.isfinite().all()), name
        assert res.final_residual is not None and bool(res.final_residual.isfinite().all()), name
