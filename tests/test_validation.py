"""Bad input: a clear error naming the parameter, raised before any network call."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd


@pytest.fixture
def model(gaussian, recorder_factory):
    return recorder_factory(gaussian)


def _sample(model, constraint, **kwargs):
    return cd.ConstrainedSampler(model, "inexact-newton", steps=3, inner_steps=2).sample(constraint, progress=False, **kwargs)


def test_y_shape_does_not_match_the_denoiser(model):
    with pytest.raises(ValueError, match=r"y has shape \(1, 1, 6, 6\).*\(B, 1, 8, 8\)"):
        _sample(model, cd.Inpainting(torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6)))
    assert model.nfe == 0


def test_mask_shape_does_not_match_y():
    with pytest.raises(ValueError, match="mask of shape"):
        cd.Inpainting(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="mask must have 4 dimensions"):
        cd.Inpainting(torch.zeros(1, 1, 8, 8), torch.ones(8, 8))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_y(bad):
    y = torch.zeros(1, 1, 8, 8)
    y[0, 0, 3, 3] = bad
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite"):
        cd.Inpainting(y, torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="y contains"):
        cd.SuperResolution(y, 2)


@pytest.mark.parametrize("low,high", [(-0.1, 1.0), (0.0, 1.5)])
def test_mask_outside_unit_interval(low, high):
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 0, 0], mask[0, 0, 0, 1] = low, high
    with pytest.raises(ValueError, match=r"mask must lie in \[0, 1\]"):
        cd.Inpainting(torch.zeros(1, 1, 8, 8), mask)


def test_bool_mask_is_accepted():
    c = cd.Inpainting(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool))
    assert c.mask.dtype == torch.float32


@pytest.mark.parametrize("field,kwargs", [
    ("steps", {"steps": 0}), ("steps", {"steps": -3}), ("inner_steps", {"inner_steps": -1}),
    ("eta", {"eta": 1.5}), ("step_scale", {"step_scale": -0.1}), ("step_scale", {"step_scale": (0.5, float("nan"))}),
])
def test_sampler_options_name_the_field(gaussian, field, kwargs):
    with pytest.raises(ValidationError) as info:
        cd.ConstrainedSampler(gaussian, "inexact-newton", **kwargs)
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_solver_options_name_the_field():
    with pytest.raises(ValidationError, match="h"):
        cd.InexactNewton(h=0.0)
    with pytest.raises(ValidationError, match="method"):
        cd.ExactJVP(method="reverse")  # type: ignore[arg-type]


def test_super_resolution_factor_must_divide_the_size(model):
    with pytest.raises(ValueError, match=r"factor=3 does not divide the sample size \(8, 8\)"):
        _sample(model, cd.SuperResolution(torch.zeros(1, 1, 3, 3), 3))
    with pytest.raises(ValueError, match="factor must be an integer >= 1"):
        cd.SuperResolution(torch.zeros(1, 1, 4, 4), 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor must be an integer >= 1"):
        cd.SuperResolution(torch.zeros(1, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r"y has shape \(1, 1, 2, 2\)"):
        _sample(model, cd.SuperResolution(torch.zeros(1, 1, 2, 2), 2))
    assert model.nfe == 0


def test_x_T_and_batch_checks(model):
    c = cd.Inpainting(torch.zeros(2, 1, 8, 8), torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="x_T has shape"):
        _sample(model, c, x_T=torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="x_T contains"):
        _sample(model, c, x_T=torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="batch sizes disagree: batch_size has 3, constraint has 2"):
        _sample(model, c, batch_size=3)
    with pytest.raises(ValueError, match="batch sizes disagree: generator has 1, constraint has 2"):
        _sample(model, c, generator=[torch.Generator()])
    assert model.nfe == 0


def test_user_operator_shape_mismatch_is_caught_early(model):
    class RowSum(cd.LinearConstraint):
        def forward(self, x):
            return x.sum(dim=-1)

    with pytest.raises(ValueError, match=r"y has shape \(1, 1, 5\) but RowSum maps samples"):
        _sample(model, RowSum(torch.zeros(1, 1, 5)))
    assert model.nfe == 0


def test_nan_during_sampling_names_the_step(gaussian, recorder_factory):
    rec = recorder_factory(gaussian, nan_at_call=7)  # calls 0..6 are fine: steps 0 and 1 (1 + 2*2 each)
    c = cd.Inpainting(torch.zeros(1, 1, 8, 8, dtype=torch.float64), torch.ones(1, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(FloatingPointError, match=r"at step 1 \(t="):
        _sample(rec, c)


def test_wrong_types_are_rejected(gaussian):
    with pytest.raises(TypeError, match="denoiser must be"):
        cd.ConstrainedSampler(object(), "inexact-newton")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="constraint must be"):
        cd.ConstrainedSampler(gaussian).sample("inpainting", progress=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        cd.Inpainting([[0.0]], torch.ones(1, 1))  # type: ignore[arg-type]
