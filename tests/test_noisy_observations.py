"""Noisy observations: ``noise_std`` on linear constraints and the discrepancy stop of the inner loop."""

from __future__ import annotations

import json
import math

import pydantic
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.constraints.base import check_noise_std
from constrained_diffusion.sampling.adaptive import AdaptiveStop, discrepancy_tolerance


def _mask(known_rows: int = 4, size: int = 8) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., :known_rows, :] = 1
    return mask


class _Dense(cd.LinearConstraint):
    """A user's linear constraint with only ``forward``: ``A x`` = the first 5 entries."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


# --- noise_std: validation and the number of measurements ------------------------------------

@pytest.mark.parametrize("value, error", [(-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                          (True, TypeError), ("0.1", TypeError), (torch.zeros(2, 2), ValueError),
                                          (torch.tensor([0.1, -1.0]), ValueError)])
def test_noise_std_must_be_finite_non_negative_numbers(value, error):
    with pytest.raises(error, match="noise_std"):
        check_noise_std(value)
    with pytest.raises(error, match="noise_std"):
        cd.Inpainting(torch.zeros(2, 1, 8, 8), _mask(), noise_std=value)
    with pytest.raises(error, match="noise_std"):
        cd.SuperResolution(torch.zeros(2, 1, 4, 4), 2, noise_std=value)


def test_noise_std_per_sample_sets_and_must_match_the_batch(gaussian32):
    c = cd.Inpainting(torch.zeros(1, 1, 8, 8), _mask(), noise_std=torch.tensor([0.1, 0.2, 0.3]))
    assert c.batch_size == 3 and c.noise_std.tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert cd.Inpainting(torch.zeros(3, 1, 8, 8), _mask(), noise_std=0.1).batch_size == 3
    with pytest.raises(ValueError, match="noise_std has 2 values but y has batch size 3"):
        cd.Inpainting(torch.zeros(3, 1, 8, 8), _mask(), noise_std=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="batch sizes disagree"):
        cd.ConstrainedSampler(gaussian32, cd.InexactNewton(), steps=2).sample(c, batch_size=2, progress=False)


def test_noise_std_changes_neither_error_nor_residual():
    y, x0 = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    clean, noisy = cd.Inpainting(y, _mask()), cd.Inpainting(y, _mask(), noise_std=0.3)
    assert clean.noise_std is None
    torch.testing.assert_close(noisy.error(x0), clean.error(x0))
    torch.testing.assert_close(noisy.residual(x0), clean.residual(x0))


def test_the_number_of_measurements_of_each_built_in():
    # inpainting with y full-size: the known entries (broadcast over channels), not y's size
    assert cd.Inpainting(torch.zeros(1, 3, 8, 8), _mask(3)).num_measurements.tolist() == [3 * 8 * 3]
    per_sample = torch.cat([_mask(2), _mask(5)])
    assert cd.Inpainting(torch.zeros(2, 1, 8, 8), per_sample).num_measurements.tolist() == [16, 40]
    soft = torch.full((1, 1, 8, 8), 0.5)  # fractional weights: m = sum of squared weights
    assert cd.Inpainting(torch.zeros(1, 1, 8, 8), soft).num_measurements.tolist() == [16.0]
    # super-resolution: every low-resolution pixel
    assert cd.SuperResolution(torch.zeros(1, 3, 4, 4), 2).num_measurements.tolist() == [48]
    # a user's LinearConstraint: the entries of one sample of y
    assert _Dense(torch.zeros(1, 5)).num_measurements.tolist() == [5]
    # nonlinear constraints have none
    assert cd.constraints.mnist_class_guidance(3).num_measurements is None


@given(sigma=st.floats(0.0, 2.0), tau=st.floats(0.1, 3.0), known=st.integers(1, 8))
def test_discrepancy_is_tau_sigma_sqrt_m(sigma, tau, known):
    c = cd.Inpainting(torch.zeros(1, 1, 8, 8), _mask(known), noise_std=sigma)
    assert float(c.discrepancy(tau)) == pytest.approx(tau * sigma * math.sqrt(8 * known), rel=1e-5, abs=1e-6)


def test_the_truths_residual_sits_at_the_discrepancy_level():
    """Why ``tau sigma sqrt(m)``: with y = x + sigma n on the known pixels, ||y - A x||^2 / (sigma^2 m) has mean 1."""
    sigma, B = 0.1, 2000
    truth = torch.rand(B, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = truth + sigma * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1))
    c = cd.Inpainting(y, _mask(3), noise_std=sigma)
    ratio = c.residual(truth) ** 2 / c.discrepancy() ** 2
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.02)  # chi^2_24 / 24: sd 0.29 / sqrt(2000)


def test_discrepancy_needs_a_noise_level_and_a_valid_tau():
    with pytest.raises(ValueError, match="Inpainting has no noise_std"):
        cd.Inpainting(torch.zeros(1, 1, 8, 8), _mask()).discrepancy()
    for tau in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="tau"):
            cd.Inpainting(torch.zeros(1, 1, 8, 8), _mask(), noise_std=0.1).discrepancy(tau)


def test_latent_pixel_constraints_carry_the_pixel_noise_level():
    pixel = cd.Inpainting(torch.zeros(1, 3, 8, 8), _mask(), noise_std=0.05)
    for wrapped in (cd.DecodedConstraint(pixel, codec=None), cd.EncodedConstraint(pixel, codec=None)):  # type: ignore[arg-type]
        torch.testing.assert_close(wrapped.discrepancy(), pixel.discrepancy())


# --- the discrepancy stop ------------------------------------------------------------------------

def _noisy_problem(model, sigma, batch=2):
    truth = model.sample_prior(batch, torch.Generator().manual_seed(0))
    y = truth + sigma * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1), dtype=truth.dtype)
    return truth, cd.Inpainting(y, _mask().to(truth.dtype), noise_std=sigma)


def _gens(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


def test_discrepancy_without_a_noise_level_is_rejected_before_any_network_call(gaussian, recorder_factory):
    model = recorder_factory(gaussian)
    sampler = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=3, residual_tol="discrepancy")
    with pytest.raises(ValueError, match=r"residual_tol='discrepancy'.*Inpainting.*noise_std"):
        sampler.sample(cd.Inpainting(torch.zeros(1, 1, 8, 8, dtype=torch.float64), _mask()), progress=False)
    with pytest.raises(ValueError, match=r"residual_tol='discrepancy'.*ClassGuidance"):
        sampler.sample(cd.constraints.mnist_class_guidance(3), progress=False)
    travel = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=3, residual_tol="discrepancy", time_travel=1)
    with pytest.raises(ValueError, match=r"residual_tol='discrepancy'"):
        travel.sample(cd.Inpainting(torch.zeros(1, 1, 8, 8, dtype=torch.float64), _mask()), progress=False)
    assert model.grad_enabled == []  # no forward ran
    with pytest.raises(ValueError, match="residual_tol='discrepancy'"):
        discrepancy_tolerance(None)


def test_discrepancy_options_are_validated(gaussian32):
    model = gaussian32
    for tau in (0.0, -1.0, float("nan")):
        with pytest.raises(pydantic.ValidationError, match="discrepancy_tau"):
            cd.ConstrainedSampler(model, residual_tol="discrepancy", discrepancy_tau=tau)
    with pytest.raises(ValueError, match="discrepancy_tau=2.0 applies only with residual_tol='discrepancy'"):
        cd.ConstrainedSampler(model, residual_tol=0.5, discrepancy_tau=2.0)
    with pytest.raises(pydantic.ValidationError, match="residual_tol"):
        cd.ConstrainedSampler(model, residual_tol="morozov")
    with pytest.raises(ValueError, match="target='x_t'"):
        cd.ConstrainedSampler(model, residual_tol="discrepancy", target="x_prev")
    with pytest.raises(pydantic.ValidationError, match="discrepancy_tau"):
        AdaptiveStop(residual_tol="discrepancy", discrepancy_tau=0.0)


def test_numeric_residual_tol_keeps_working():
    config = cd.SamplerConfig(residual_tol=0.5)
    assert config.adaptive and config.build_correction().stop.residual_tol == 0.5
    assert not cd.SamplerConfig().adaptive
    assert cd.SamplerConfig(residual_tol="discrepancy").adaptive


def test_the_discrepancy_config_round_trips_through_json(tmp_path, gaussian):
    config = cd.SamplerConfig(steps=4, inner_steps=2, residual_tol="discrepancy", discrepancy_tau=1.5)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    again = cd.SamplerConfig.from_file(path)
    assert again == config
    stop = cd.ConstrainedSampler.from_config(gaussian, again).correction.stop
    assert stop.residual_tol == "discrepancy" and stop.discrepancy_tau == 1.5


def test_a_huge_noise_level_stops_every_inner_loop_at_once(gaussian):
    """Every residual is below the level: one forward per step, the sample of plain DDIM."""
    _, c = _noisy_problem(gaussian, 0.1)
    huge = cd.Inpainting(c.y, _mask().to(c.y.dtype), noise_std=1e6)
    stop = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=5, inner_steps=5, residual_tol="discrepancy")
    plain = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=5, inner_steps=0)
    a = stop.sample(huge, generator=_gens(2), progress=False)
    b = plain.sample(huge, generator=_gens(2), progress=False)
    assert a.nfe == 5
    torch.testing.assert_close(a.sample, b.sample)


def test_zero_noise_never_stops(gaussian):
    _, c = _noisy_problem(gaussian, 0.0)
    result = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=4, inner_steps=3,
                                   residual_tol="discrepancy").sample(c, generator=_gens(2), progress=False)
    assert result.nfe == 4 * (1 + 2 * 3)


def test_each_sample_stops_at_its_own_level(gaussian):
    """Per-sample noise levels: the noisier sample stops earlier; each kept residual is at or below its level
    in every step where the level was reached, and fitting goes further below it without the stop."""
    truth = gaussian.sample_prior(2, torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 0.01], dtype=torch.float64)
    y = truth + sigma.view(2, 1, 1, 1) * torch.randn(truth.shape, generator=torch.Generator().manual_seed(1), dtype=truth.dtype)
    c = cd.Inpainting(y, _mask().to(y.dtype), noise_std=sigma)
    level = c.discrepancy().float()
    stop = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=10, inner_steps=5, residual_tol="discrepancy")
    fit = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=10, inner_steps=5)
    a = stop.sample(c, generator=_gens(2), progress=False)
    b = fit.sample(c, generator=_gens(2), progress=False)
    last = a.residuals[:, -1, :]  # (steps, B): the kept residual of each step
    reached = (a.residuals <= level.view(1, 1, 2)).any(dim=1)  # the level was reached within the step
    assert bool((last[reached] <= level.expand_as(last)[reached] + 1e-6).all())
    assert bool(reached[:, 0].sum() > reached[:, 1].sum())  # sigma = 0.3 stops in more steps than sigma = 0.01
    alone = [stop.sample(cd.Inpainting(y[i:i + 1], _mask().to(y.dtype), noise_std=float(sigma[i])),
                         generator=_gens(2)[i], progress=False) for i in range(2)]
    assert alone[0].nfe < alone[1].nfe <= b.nfe  # fewer forwards where the noise is larger
    for i in range(2):  # a batch of 2 is 2 runs of one
        torch.testing.assert_close(a.sample[i:i + 1], alone[i].sample)
    assert float(b.final_residual[0]) < float(a.final_residual[0])  # fitting to zero goes below the noise level


# --- the study -------------------------------------------------------------------------------------

def test_digit_indices_and_observations_are_reproducible():
    from constrained_diffusion.analysis.noisy import digit_indices, noisy_observation

    assert digit_indices(1) == [0] and digit_indices(32)[-1] == 499 and len(set(digit_indices(32))) == 32
    with pytest.raises(ValueError, match="n must lie"):
        digit_indices(0)
    truth = torch.zeros(3, 1, 4, 4)
    a = noisy_observation(truth, 0.1, [5, 6, 7], seed=0)
    b = noisy_observation(truth[1:], 0.1, [6, 7], seed=0)
    torch.testing.assert_close(a[1:], b)  # the noise of digit 6 does not depend on the batch
    assert float(a.std()) == pytest.approx(0.1, rel=0.3)
    with pytest.raises(ValueError, match="sigma"):
        noisy_observation(truth, -1.0, [0, 1, 2])


def test_analyze_noisy_writes_its_block_and_resumes(tmp_path, capsys):
    from constrained_diffusion.cli.main import main

    page = tmp_path / "page.md"
    page.write_text("<!-- NOISY-TABLE:START -->\nold\n<!-- NOISY-TABLE:END -->\n")
    results = tmp_path / "noisy.jsonl"
    argv = ["analyze", "noisy", "--digits", "2", "--sigmas", "0.2", "--steps", "2", "--inner-steps", "1",
            "--results", str(results), "--write-docs", str(page)]
    assert main(argv) == 0
    text = page.read_text()
    assert "constrained-diffusion analyze noisy --digits 2 --sigmas 0.2 --steps 2 --inner-steps 1" in text
    assert "| 0.2     | fit to zero" in text and "| 0.2     | discrepancy" in text
    lines = results.read_text().splitlines()
    assert len(lines) == 4  # 2 digits x 2 methods
    assert main(argv) == 0  # resumes: nothing new
    assert results.read_text().splitlines() == lines
    with pytest.raises(SystemExit):
        main(["analyze", "noisy", "--sigmas", "-1"])
    assert "--sigmas" in capsys.readouterr().err
