"""The methods of the field (issue 24) on the one engine: every recipe of `cd.recipes.METHODS`, parametrised by registry name."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import constrained_diffusion as cd

METHODS = [r.name for r in cd.recipes.METHODS]
NEEDS_SVD = ["ddrm", "ddnm", "pigdm", "diffpir"]
"""Methods that need the operator's SVD / pseudo-inverse (`svd_of`)."""
LINEAR_ONLY = {"mmps": "LinearConstraint", "repaint": "Inpainting"}


def _gens(n: int = 1, seed: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _truth(model, batch: int, seed: int) -> torch.Tensor:
    if hasattr(model, "sample_prior"):
        return model.sample_prior(batch, torch.Generator().manual_seed(seed))
    truth = -torch.ones(batch, *model.sample_shape)  # a digit-like stroke on the background, in [-1, 1]
    truth[..., 6:22, 12:16] = 1.0
    return truth


def _inpainting(model, batch: int = 1, seed: int = 3) -> cd.Inpainting:
    truth = _truth(model, batch, seed)
    mask = torch.zeros(1, *model.sample_shape)
    mask[..., : model.sample_shape[-1] // 2] = 1
    return cd.Inpainting(truth, mask)


def _sr(model, factor: int = 2, kernel: str = "box", seed: int = 3) -> cd.SuperResolution:
    truth = model.sample_prior(1, torch.Generator().manual_seed(seed))
    low = torch.nn.functional.avg_pool2d(truth, factor) if kernel == "box" else cd.SuperResolution(
        torch.zeros(1, truth.shape[1], truth.shape[2] // factor, truth.shape[3] // factor, dtype=truth.dtype), factor, kernel).forward(truth)
    return cd.SuperResolution(low, factor, kernel=kernel)


def test_at_least_eight_methods_are_registered():
    assert len(METHODS) >= 8 and set(METHODS) <= set(cd.recipes.names())
    for name in METHODS:
        spec = cd.recipes.get(name).config.correction
        assert spec is not None and spec.name in cd.sampling.correction_names()
        assert len(cd.recipes.get(name).search_space) >= 1


@pytest.mark.parametrize("name", METHODS)
def test_method_reduces_the_residual_on_the_gaussian_model(gaussian, name):
    c = _inpainting(gaussian, batch=2)
    free = cd.ConstrainedSampler(gaussian, steps=8, inner_steps=0).sample(c, generator=_gens(2), progress=False)
    out = cd.recipes.get(name, steps=8).sampler(gaussian).sample(c, generator=_gens(2), progress=False)
    assert out.sample.shape == (2, *gaussian.sample_shape) and bool(out.sample.isfinite().all())
    assert bool((out.final_residual < 0.5 * free.final_residual).all()), (out.final_residual, free.final_residual)
    again = cd.recipes.get(name, steps=8).sampler(gaussian).sample(c, generator=_gens(2), progress=False)
    assert torch.equal(out.sample, again.sample)  # same seeds, same samples


@pytest.mark.parametrize("name", METHODS)
def test_method_runs_on_the_mnist_ddpm(mnist_ddpm, name):
    c = _inpainting(mnist_ddpm, seed=5)
    out = cd.recipes.get(name, steps=2, **({"correction.repeats": 1} if name == "repaint" else {})).sampler(mnist_ddpm).sample(
        c, generator=_gens(), progress=False)
    assert out.sample.shape == (1, *mnist_ddpm.sample_shape) and bool(out.sample.isfinite().all())
    assert float(out.final_residual) < float(mnist_free(mnist_ddpm, c).final_residual)


_FREE: dict[int, cd.SampleResult] = {}


def mnist_free(model, c) -> cd.SampleResult:
    """The unconstrained 2-step run on the same noise (computed once)."""
    if id(c.y) not in _FREE:
        _FREE.clear()
        _FREE[id(c.y)] = cd.ConstrainedSampler(model, steps=2, inner_steps=0).sample(c, generator=_gens(), progress=False)
    return _FREE[id(c.y)]


@pytest.fixture(scope="module")
def mnist_ddpm():
    return cd.MNISTDenoiser.pretrained("ddpm")


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), width=st.integers(1, 7), eta=st.floats(0.0, 1.0), method=st.sampled_from(["ddrm", "ddnm"]))
def test_ddrm_ddnm_reproduce_observed_entries_in_inpainting(gaussian32, seed, width, eta, method):
    model = gaussian32
    truth = model.sample_prior(1, torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :width] = 1
    out = cd.recipes.get(method, steps=4, eta=eta).sampler(model).sample(cd.Inpainting(truth, mask), generator=_gens(1, seed), progress=False)
    known = mask.bool().expand_as(truth)
    assert torch.allclose(out.sample[known], truth[known], atol=1e-6, rtol=0)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), factor=st.sampled_from([2, 4]), kernel=st.sampled_from(["box", "bicubic"]),
       method=st.sampled_from(["ddrm", "ddnm"]))
def test_ddrm_ddnm_reproduce_the_low_resolution_image(gaussian32, seed, factor, kernel, method):
    model = gaussian32
    c = _sr(model, factor, kernel, seed)
    out = cd.recipes.get(method, steps=4).sampler(model).sample(c, generator=_gens(1, seed), progress=False)
    assert torch.allclose(c.forward(out.sample), c.y, atol=1e-6, rtol=0)
    assert float(out.final_residual) < 1e-5


class _Norm(cd.NonlinearConstraint):
    def loss(self, x):
        return x.flatten(1).pow(2).sum(dim=1)


@pytest.mark.parametrize("name", NEEDS_SVD + list(LINEAR_ONLY))
def test_methods_that_need_the_operator_refuse_other_constraints(gaussian, name):
    expected = LINEAR_ONLY.get(name, "closed-form SVD")
    with pytest.raises(TypeError, match=rf"{expected}.*got _Norm|{expected}"):
        cd.recipes.get(name, steps=2).sampler(gaussian).sample(_Norm(), batch_size=1, generator=_gens(), progress=False)
    if name in NEEDS_SVD:  # a linear operator without a closed-form SVD is refused too, naming its type
        class Blur(cd.LinearConstraint):
            def forward(self, x):
                return torch.nn.functional.avg_pool2d(x, 3, 1, 1)

        blur = Blur(torch.zeros(1, *gaussian.sample_shape))
        with pytest.raises(TypeError, match="got Blur"):
            cd.recipes.get(name, steps=2).sampler(gaussian).sample(blur, generator=_gens(), progress=False)


def test_methods_without_an_operator_take_any_constraint(gaussian):
    c = _Norm()
    for name in ("daps", "red-diff", "flowchef"):
        out = cd.recipes.get(name, steps=6).sampler(gaussian).sample(c, batch_size=1, generator=_gens(), progress=False)
        free = cd.ConstrainedSampler(gaussian, steps=6, inner_steps=0).sample(c, batch_size=1, generator=_gens(), progress=False)
        assert float(out.final_residual) < float(free.final_residual), name


@pytest.mark.parametrize("name", ["pigdm", "mmps"])
@pytest.mark.parametrize("solver", ["gradient-descent", "inexact-newton", "exact-jvp"])
def test_jacobian_products_swap_through_the_solver(gaussian, name, solver):
    c = _inpainting(gaussian)
    out = cd.recipes.get(name, steps=6, solver={"name": solver}).sampler(gaussian).sample(c, generator=_gens(), progress=False)
    free = cd.ConstrainedSampler(gaussian, steps=6, inner_steps=0).sample(c, generator=_gens(), progress=False)
    assert float(out.final_residual) < 0.5 * float(free.final_residual)
    base = 6 if name == "pigdm" else 6 * (1 + cd.recipes.get(name).config.correction.options["iterations"])
    assert out.nbe == (6 if solver == "gradient-descent" else 0)
    if solver != "exact-jvp":  # forward-mode AD counts its own way
        assert out.nfe == base + (6 if solver == "inexact-newton" else 0)


def test_newton_and_gradient_pigdm_agree_for_a_symmetric_jacobian(gaussian):
    # the analytic Gaussian denoiser has a symmetric J: J e (inexact Newton) = J^T e (backprop) up to the finite difference
    c = _inpainting(gaussian)
    a = cd.recipes.get("pigdm", steps=6, solver="gradient-descent").sampler(gaussian).sample(c, generator=_gens(), progress=False)
    b = cd.recipes.get("pigdm", steps=6, solver={"name": "inexact-newton", "h": 1e-4}).sampler(gaussian).sample(
        c, generator=_gens(), progress=False)
    assert torch.allclose(a.sample, b.sample, atol=1e-3)


def test_flowchef_steers_the_shipped_flow_model():
    flow = cd.MNISTDenoiser.pretrained("flow")
    c = _inpainting(flow, seed=7)
    out = cd.recipes.get("flowchef", steps=3).sampler(flow).sample(c, generator=_gens(), progress=False)
    free = cd.ConstrainedSampler(flow, steps=3, inner_steps=0).sample(c, generator=_gens(), progress=False)
    assert float(out.final_residual) < 0.5 * float(free.final_residual) and (out.nfe, out.nbe) == (3, 0)


def _tiny_flow(folder, arch: str):
    from tiny_pipelines import tiny_flux, tiny_sd3

    from constrained_diffusion.denoisers.flow_match import FlowMatchDenoiser

    (tiny_sd3() if arch == "sd3" else tiny_flux()).save_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    embeds = {"prompt_embeds": torch.randn(1, 7, 32, generator=g), "pooled_prompt_embeds": torch.randn(1, 64 if arch == "sd3" else 32, generator=g)}
    return FlowMatchDenoiser.from_pretrained(folder).condition(**embeds)


@pytest.fixture(scope="module")
def tiny_sd3_denoiser(tmp_path_factory):
    return _tiny_flow(tmp_path_factory.mktemp("sd3") / "sd3", "sd3")


@pytest.mark.parametrize("arch", ["sd3", pytest.param("flux", marks=pytest.mark.slow)])
def test_flowchef_on_tiny_flow_pipelines(request, tmp_path, arch):
    den = request.getfixturevalue("tiny_sd3_denoiser") if arch == "sd3" else _tiny_flow(tmp_path / arch, arch)
    H, W = den.height, den.width
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mask = torch.zeros(1, 1, H, W)
    mask[..., : W // 2] = 1
    recipe = cd.recipes.get("flowchef", steps=2)
    c = recipe.constraint(cd.Inpainting(image, mask), den)
    out = recipe.sampler(den).sample(c, generator=_gens(), progress=False)
    free = cd.ConstrainedSampler(den, steps=2, inner_steps=0).sample(c, generator=_gens(), progress=False)
    assert float(out.final_residual) < float(free.final_residual) and out.nbe == 0


def test_repaint_and_ddnm_on_a_latent_model_use_the_latent_mask(tiny_sd3_denoiser):
    den = tiny_sd3_denoiser
    H, W = den.height, den.width
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mask = torch.zeros(1, 1, H, W)
    mask[..., : W // 2] = 1
    for name in ("ddnm", "repaint"):
        recipe = cd.recipes.get(name, steps=2)
        c = recipe.constraint(cd.Inpainting(image, mask), den)
        assert isinstance(c, cd.Inpainting)
        out = recipe.sampler(den).sample(c, generator=_gens(), progress=False)
        assert float(out.final_residual) < 1e-4, name
    with pytest.raises(TypeError, match="only inpainting"):
        cd.recipes.get("ddrm").constraint(cd.SuperResolution(torch.zeros(1, 3, H // 2, W // 2), 2), den)


def test_method_options_are_validated_and_named(gaussian):
    with pytest.raises(ValueError, match="eta_b"):
        cd.recipes.get("ddrm", **{"correction.eta_b": 2.0})
    with pytest.raises(ValueError, match="set correction.inner_steps instead"):
        cd.recipes.get("ddnm").config.model_validate({"correction": {"name": "ddnm"}, "inner_steps": 3})
    assert cd.recipes.get("diffpir", lam=3.0).config.correction.options["lam"] == 3.0  # a plain key that is the correction's
    assert cd.recipes.get("repaint", **{"correction.repeats": 2}).sampler(gaussian).correction.repeats == 2
