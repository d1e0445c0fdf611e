"""Parity with deepinv's samplers on the shipped MNIST DDPM, and the denoiser/SVD adapters both ways.

The algorithms that coincide (DDRM with deepinv's noise convention undone, DiffPIR on deepinv's
times) must agree to float tolerance on real digits with the same seed; the adapters must
round-trip the network exactly.
"""

from __future__ import annotations

import pytest

pytest.importorskip("deepinv", reason="deepinv not installed (pip install -e plugins/deepinv; see its README)")
import deepinv
import torch
from cd_deepinv import CDGaussianDenoiser, DeepinvDenoiser, PhysicsConstraint, observe, parity

import constrained_diffusion as cd
from constrained_diffusion.constraints.masks import box_mask


@pytest.fixture(scope="module")
def mnist() -> cd.MNISTDenoiser:
    return cd.MNISTDenoiser.pretrained("ddpm")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ddrm_matches_deepinv_to_float_tolerance() -> None:
    ours, theirs, truth = parity.ddrm(n=2, steps=10, seed=1, exact=True)
    assert ours.shape == theirs.shape == truth.shape == (2, 1, 32, 32)
    assert float((ours - theirs).abs().max()) < 1e-4


def test_ddrm_as_shipped_differs_by_its_noise_convention() -> None:
    # deepinv draws sigma/sqrt(2) noise at level sigma: not the same sampler, visibly
    ours, theirs, _ = parity.ddrm(n=2, steps=10, seed=1, exact=False)
    assert float((ours - theirs).abs().max()) > 0.1


def test_diffpir_matches_deepinv_to_float_tolerance() -> None:
    ours, theirs, truth = parity.diffpir(n=2, steps=10, seed=2)
    assert ours.shape == theirs.shape == truth.shape
    assert float((ours - theirs).abs().max()) < 1e-4


def test_fixed_times_schedule_walks_the_given_times(mnist: cd.MNISTDenoiser) -> None:
    schedule = parity.FixedTimesSchedule(mnist.schedule.alphas_cumprod, [999, 500, 3], final_alpha_one=False)
    grid = schedule.grid(3)
    assert grid.times.tolist() == [999, 500, 3]
    assert grid.point(3) == pytest.approx(tuple(float(v) for v in mnist.alpha_sigma(torch.tensor(0))))
    with pytest.raises(ValueError, match="3 fixed times"):
        schedule.grid(4)
    with pytest.raises(ValueError, match="descending"):
        parity.FixedTimesSchedule(mnist.schedule.alphas_cumprod, [3, 500], final_alpha_one=True)


# ------------------------------------------------------------------ the denoiser adapters
@pytest.mark.parametrize("data_range", ["[0,1]", "[-1,1]"])
def test_denoiser_round_trip_is_the_network(mnist: cd.MNISTDenoiser, data_range: str) -> None:
    wrapped = DeepinvDenoiser(CDGaussianDenoiser(mnist, data_range=data_range), (1, 32, 32), data_range=data_range)  # type: ignore[arg-type]
    x_t = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for t in (999, 500, 20):
        tt = torch.tensor(t)
        alpha = float(mnist.alpha_sigma(tt)[0])  # x0 = (x_t - sigma eps) / alpha: rounding grows as 1 / alpha
        assert float((wrapped(x_t, tt) - mnist(x_t, tt)).abs().max()) < 1e-5 / alpha


def test_cd_gaussian_denoiser_per_sample_levels(mnist: cd.MNISTDenoiser) -> None:
    d = CDGaussianDenoiser(mnist)
    u = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0.05, 0.4])
    both = d(u, levels)
    one = torch.cat([d(u[:1], 0.05), d(u[1:], 0.4)])
    assert torch.allclose(both, one, atol=1e-6)
    assert d.time_of(0.0) == 0 and d.time_of(1e6) == 999
    with pytest.raises(ValueError, match="one value per sample"):
        d(u, torch.tensor([0.1, 0.2, 0.3]))


def test_adapters_refuse_bad_input() -> None:
    flow = cd.MNISTDenoiser.pretrained("flow")
    with pytest.raises(TypeError, match="VPSchedule"):
        CDGaussianDenoiser(flow)
    with pytest.raises(ValueError, match="data_range"):
        DeepinvDenoiser(deepinv.models.MedianFilter(), (1, 8, 8), data_range="[0,255]")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model"):
        DeepinvDenoiser(42, (1, 8, 8))  # type: ignore[arg-type]


def test_library_recipe_runs_on_a_wrapped_deepinv_denoiser(mnist: cd.MNISTDenoiser) -> None:
    # a deepinv user's network (here the MNIST DDPM behind deepinv's interface) with the library's DDNM
    model = DeepinvDenoiser(CDGaussianDenoiser(mnist), (1, 32, 32))
    truth, _ = parity.stratified_set("mnist-test", 2)
    physics = deepinv.physics.Inpainting(img_size=(1, 32, 32), mask=box_mask((32, 32), 8, 8, 16, 16)[0])
    constraint = PhysicsConstraint(physics, observe(physics, truth))
    out = cd.recipes.get("ddnm", steps=5).sampler(model).sample(constraint, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.nfe == 5
    assert float(out.final_residual.max()) < 1e-4  # DDNM reproduces the observed pixels


# ------------------------------------------------------------------ svd() of a decomposable physics
@pytest.mark.parametrize("method", ["ddrm", "ddnm", "diffpir"])
def test_physics_svd_equals_the_library_inpainting(mnist: cd.MNISTDenoiser, method: str) -> None:
    truth, _ = parity.stratified_set("mnist-test", 2)
    mask = box_mask((32, 32), 8, 8, 16, 16)
    physics = deepinv.physics.Inpainting(img_size=(1, 32, 32), mask=mask[0])
    sampler = cd.recipes.get(method, steps=4).sampler(mnist)
    a = sampler.sample(PhysicsConstraint(physics, observe(physics, truth)), generator=torch.Generator().manual_seed(3), progress=False)
    b = sampler.sample(cd.Inpainting(truth, mask), generator=torch.Generator().manual_seed(3), progress=False)
    assert float((a.sample - b.sample).abs().max()) < 1e-5


def test_svd_of_a_blur_fft_and_a_refusal(mnist: cd.MNISTDenoiser) -> None:
    # BlurFFT is decomposable (its U, V are FFTs): DDNM inverts the noiseless, nowhere-zero blur spectrum
    truth, _ = parity.stratified_set("mnist-test", 1)
    blur = deepinv.physics.BlurFFT(img_size=(1, 32, 32), filter=deepinv.physics.functional.gaussian_blur(sigma=(1.0, 1.0)))
    out = cd.recipes.get("ddnm", steps=3).sampler(mnist).sample(PhysicsConstraint(blur, observe(blur, truth)), progress=False)
    assert float(out.final_residual.max()) < 1e-4
    down = deepinv.physics.Downsampling(img_size=(1, 32, 32), factor=2, filter="bicubic")
    constraint = PhysicsConstraint(down, observe(down, torch.zeros(1, 1, 32, 32)))
    with pytest.raises(TypeError, match="DecomposablePhysics"):
        cd.recipes.get("ddrm", steps=2).sampler(mnist).sample(constraint, progress=False)


def test_svd_with_01_range_needs_validate() -> None:
    physics = deepinv.physics.Inpainting(img_size=(1, 4, 4), mask=torch.ones(1, 4, 4))
    constraint = PhysicsConstraint(physics, torch.zeros(1, 1, 4, 4), physics_range="[0,1]")
    with pytest.raises(ValueError, match="validate"):
        constraint.svd()
    constraint.validate((1, 4, 4))
    assert float(constraint.svd().y_u().min()) == -1.0  # y = 0 in [0, 1] units is -1 in the library's


# ------------------------------------------------------------------ the docs block
def test_docs_block_is_replaced_not_duplicated(tmp_path) -> None:
    page = tmp_path / "recipes.md"
    page.write_text("# Recipes\n")
    with pytest.raises(ValueError, match="PARITY-DEEPINV"):
        parity.write_docs(page, "x")
    page.write_text("# Recipes\n\n<!-- PARITY-DEEPINV:START -->\nold\n<!-- PARITY-DEEPINV:END -->\n\ntail\n")
    parity.write_docs(page, parity.render([parity.ParityRow("ddrm", "exact", 10, 2e-6, 11.2, 11.2, 3.0)], "python -m cd_deepinv.parity", 2))
    parity.write_docs(page, parity.render([parity.ParityRow("ddrm", "exact", 10, 3e-6, 12.0, 12.0, 3.0)], "cmd", 2))
    text = page.read_text()
    assert text.count("PARITY-DEEPINV:START") == 1 and "old" not in text and "2e-06" not in text
    assert "| ddrm | exact | 10 | 3e-06 | 12.00 | 12.00 | 3.0 |" in text and text.endswith("\n\ntail\n")


def test_parity_command_writes_its_block(tmp_path, capsys) -> None:
    page = tmp_path / "recipes.md"
    page.write_text("<!-- PARITY-DEEPINV:START -->\n<!-- PARITY-DEEPINV:END -->\n")
    assert parity.main(["--digits", "1", "--steps", "3", "--dps-steps", "3", "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert "--digits 1 --steps 3" in text and text.count("| ddrm |") == 2 and "| diffpir |" in text and "| dps |" in text
    with pytest.raises(SystemExit):
        parity.main(["--steps", "1"])
