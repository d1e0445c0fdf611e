"""The adaptive inner loop: stop when the residual is small enough or stops decreasing."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd


def _problem(model: cd.Denoiser, batch: int = 1) -> cd.Inpainting:
    truth = model.sample_prior(batch, torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8, dtype=truth.dtype)
    mask[..., :4] = 1
    return cd.Inpainting(truth, mask)


def _run(model, constraint, batch=1, **options):
    gens = [torch.Generator().manual_seed(10 + i) for i in range(batch)]
    return cd.ConstrainedSampler(model, steps=10, inner_steps=5, **options).sample(constraint, generator=gens, progress=False)


def test_residual_tolerance_saves_forwards_and_meets_the_tolerance(gaussian):
    pixel = _problem(gaussian)
    fixed = _run(gaussian, pixel)
    tol = float(fixed.residuals[:, -1].median())
    adaptive = _run(gaussian, pixel, residual_tol=tol)
    assert adaptive.nfe < fixed.nfe
    # a step that stopped early ended at or below the tolerance
    stopped = adaptive.residuals[:, 1:-1].eq(adaptive.residuals[:, -1:]).all(dim=1).squeeze(-1)
    assert bool((adaptive.residuals[stopped, -1] <= tol).all())


def test_no_decrease_stops_and_keeps_the_best_iterate(gaussian):
    pixel = _problem(gaussian)
    fixed = _run(gaussian, pixel, step_scale=2.0)  # too large: some inner steps increase the residual
    adaptive = _run(gaussian, pixel, step_scale=2.0, min_decrease=0.0)
    assert adaptive.nfe < fixed.nfe
    # the kept iterate of every step is the best one seen in that step
    rows = adaptive.residuals[..., 0]
    assert bool((rows[:, -1] <= rows[:, 0] + 1e-12).all())


def test_adaptive_batch_equals_single_runs(gaussian):
    pixel = _problem(gaussian, batch=3)
    batch = _run(gaussian, pixel, batch=3, min_decrease=0.3)
    for i in range(3):
        single = cd.ConstrainedSampler(gaussian, steps=10, inner_steps=5, min_decrease=0.3).sample(
            cd.Inpainting(pixel.image[i:i + 1], pixel.mask), generator=torch.Generator().manual_seed(10 + i), progress=False)
        assert torch.allclose(batch.sample[i:i + 1], single.sample, atol=1e-10)


def test_adaptive_options_are_validated():
    with pytest.raises(ValidationError, match="residual_tol"):
        cd.SamplerConfig(residual_tol=-1.0)
    with pytest.raises(ValidationError, match="min_decrease"):
        cd.SamplerConfig(min_decrease=1.5)
    assert not cd.SamplerConfig().adaptive and cd.SamplerConfig(min_decrease=0.1).adaptive


def test_recorded_residual_is_that_of_the_kept_iterate(gaussian):
    pixel = _problem(gaussian, batch=3)
    seen = []

    def check(info: cd.StepInfo) -> None:
        seen.append(torch.allclose(pixel.residual(info.x0).float(), info.residual, rtol=1e-5, atol=1e-6))

    gens = [torch.Generator().manual_seed(10 + i) for i in range(3)]
    # step_scale=2 overshoots, so the last iterate is often not the best; residual_tol alone never stops early
    cd.ConstrainedSampler(gaussian, steps=10, inner_steps=5, step_scale=2.0, residual_tol=1e-12).sample(pixel, generator=gens, progress=False, callback=check)
    assert len(seen) == 10 and all(seen)


def test_adaptive_needs_the_inner_loop_of_target_x_t():
    with pytest.raises(ValidationError, match="target='x_t'"):
        cd.SamplerConfig(target="x0", min_decrease=0.1)
