"""Parity with azula on the shipped MNIST DDPM, and the denoiser adapters both ways.

DDIM and DPS at batch 1 coincide with azula's and must agree to float tolerance with the same
seed; the adapters must round-trip the network exactly.
"""

from __future__ import annotations

import pytest

pytest.importorskip("azula", reason="azula not installed (pip install -e plugins/azula)")
import azula
import torch
from azula.linalg.covariance import DiagonalCovariance
from cd_azula import AzulaDenoiser, AzulaSchedule, CDAzulaDenoiser, DiscreteSchedule, parity

import constrained_diffusion as cd


@pytest.fixture(scope="module")
def mnist() -> cd.MNISTDenoiser:
    return cd.MNISTDenoiser.pretrained("ddpm")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ddim_matches_azula_to_float_tolerance() -> None:
    ours, theirs = parity.ddim(n=2, steps=8, seed=3)
    assert ours.shape == theirs.shape == (2, 1, 32, 32)
    assert float((ours - theirs).abs().max()) < 1e-4


def test_dps_matches_azula_at_batch_one() -> None:
    ours, theirs, truth = parity.dps(n=1, steps=8, seed=4)
    assert ours.shape == theirs.shape == truth.shape == (1, 1, 32, 32)
    assert float((ours - theirs).abs().max()) < 1e-4


def test_dps_differs_at_batch_two_by_azulas_batch_norm() -> None:
    # azula's ||y - A x0|| spans the batch: its per-sample guidance is smaller than the library's
    ours, theirs, _ = parity.dps(n=2, steps=8, seed=4, per_digit=False)
    assert float((ours - theirs).abs().max()) > 0.1


def test_round_trip_is_the_network_on_azulas_clock(mnist: cd.MNISTDenoiser) -> None:
    model = AzulaDenoiser(CDAzulaDenoiser(mnist), (1, 32, 32))
    grid = model.grid(10)
    assert grid.times.dtype == torch.float32 and float(grid.times[0]) == 1.0
    x_t = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for t in grid.times[:: 3]:
        k = torch.tensor(int(round(float(t) * 999)))
        alpha = float(mnist.alpha_sigma(k)[0])
        assert float((model(x_t, t) - mnist(x_t, k)).abs().max()) < 1e-5 / alpha
    assert grid.point(10) == pytest.approx(tuple(float(v) for v in mnist.alpha_sigma(torch.tensor(0))), abs=1e-6)  # float32 on azula's side


def test_azula_schedule_grid_is_azulas_sampler_grid() -> None:
    schedule = azula.noise.VPSchedule()
    sampler = azula.sample.DDIMSampler(azula.denoise.GaussianDenoiser(torch.zeros(3), DiagonalCovariance(torch.ones(3)), schedule), steps=6)
    ours = AzulaSchedule(schedule).grid(6)
    assert torch.equal(ours.times, sampler.timesteps[:-1])
    alpha, sigma = schedule(sampler.timesteps)
    assert torch.allclose(ours.alpha, alpha.double()) and torch.allclose(ours.sigma, sigma.double())


def test_discrete_schedule_and_refusals(mnist: cd.MNISTDenoiser) -> None:
    s = DiscreteSchedule(mnist.schedule.alphas_cumprod)
    alpha, sigma = s(torch.tensor([1.0, 0.0]))
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(2))
    with pytest.raises(TypeError, match="VPSchedule"):
        CDAzulaDenoiser(cd.MNISTDenoiser.pretrained("flow"))
    with pytest.raises(TypeError, match="azula.denoise.Denoiser"):
        AzulaDenoiser(torch.nn.Identity(), (1, 4, 4))
    with pytest.raises(ValueError, match="one time per call"):
        CDAzulaDenoiser(mnist)(torch.zeros(2, 1, 32, 32), torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="steps"):
        AzulaSchedule(azula.noise.VPSchedule()).grid(0)


def test_library_recipes_run_on_an_azula_denoiser() -> None:
    # an azula user's model (here azula's analytic Gaussian denoiser) under the library's DDNM and inexact Newton
    prior = azula.denoise.GaussianDenoiser(torch.zeros(16), DiagonalCovariance(torch.ones(16)), azula.noise.VPSchedule())

    class Flat(azula.denoise.Denoiser):
        def __init__(self) -> None:
            super().__init__()
            self.schedule = prior.schedule

        def forward(self, x_t, t, **kwargs):
            return azula.denoise.DiracPosterior(mean=prior(x_t.flatten(1), t).mean.reshape(x_t.shape))

    model = AzulaDenoiser(Flat(), (1, 4, 4))
    truth = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    out = cd.recipes.get("ddnm", steps=6).sampler(model).sample(cd.Inpainting(truth, mask), generator=torch.Generator().manual_seed(0),
                                                                 progress=False)
    free = cd.ConstrainedSampler(model, "inexact-newton", steps=6, inner_steps=0).sample(cd.Inpainting(truth, mask),
                                                                                          generator=torch.Generator().manual_seed(0), progress=False)
    fit = cd.ConstrainedSampler(model, "inexact-newton", steps=6, inner_steps=3).sample(cd.Inpainting(truth, mask),
                                                                                         generator=torch.Generator().manual_seed(0), progress=False)
    assert float(fit.final_residual.max()) < float(free.final_residual.max())
    # DDNM reproduces the observed entries up to the noise azula's clock keeps at its end, sigma(0) = 1e-3 (8 entries)
    assert float(out.final_residual.max()) < 10 * 1e-3 * 8**0.5 < 0.1 * float(free.final_residual.max())


def test_docs_block_is_replaced_not_duplicated(tmp_path) -> None:
    page = tmp_path / "recipes.md"
    page.write_text("# Recipes\n")
    with pytest.raises(ValueError, match="PARITY-AZULA"):
        parity.write_docs(page, "x")
    page.write_text("# Recipes\n<!-- PARITY-AZULA:START -->\nold\n<!-- PARITY-AZULA:END -->\n")
    for diff in (1e-5, 2e-5):
        parity.write_docs(page, parity.render([parity.ParityRow("dps", "batch 1", 8, diff, 9.1, 9.1, 2.0)], "cmd", 1))
    text = page.read_text()
    assert text.count("PARITY-AZULA:START") == 1 and "old" not in text and "| dps | batch 1 | 8 | 2e-05 | 9.10 | 9.10 | 2.0 |" in text


def test_parity_command_writes_its_block(tmp_path) -> None:
    page = tmp_path / "recipes.md"
    page.write_text("<!-- PARITY-AZULA:START -->\n<!-- PARITY-AZULA:END -->\n")
    assert parity.main(["--digits", "1", "--steps", "3", "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert "--digits 1 --steps 3" in text and all(f"| {m} |" in text for m in ("dps", "pigdm", "mmps", "repaint"))
    with pytest.raises(SystemExit):
        parity.main(["--digits", "0"])
