"""Constraints that add up: ``c1 + c2``, ``w * c``, ``Composite([(c, w), ...])``."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.constraints.composite import Composite, check_weight

SHAPE = (1, 8, 8)


def _x(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _mask(rows: slice) -> torch.Tensor:
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., rows, :] = 1
    return mask


class Quadratic(cd.NonlinearConstraint):
    """``loss = sum(x^4) / 4``: a nonlinear part with a closed-form error ``-x^3``."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return x.pow(4).flatten(1).sum(dim=1) / 4


def _parts() -> list[cd.Constraint]:
    return [cd.Inpainting(_x(1), _mask(slice(0, 4))),
            cd.SuperResolution(_x(2)[:, :, :4, :4], 2, "box"),
            Quadratic()]


weights = st.floats(0.0, 10.0, allow_nan=False)


@given(w=st.tuples(weights, weights, weights), seed=st.integers(0, 2**16))
def test_composite_error_and_residual_are_the_weighted_sums_of_the_parts(w, seed):
    """The composite error law: e(sum w_i c_i) = sum w_i e_i, and r = sum w_i r_i (r_i each part's own)."""
    parts, x0 = _parts(), _x(seed)
    composite = Composite(list(zip(parts, w)))
    e, r = composite.error_and_residual(x0)
    expected_e = sum(wi * c.error(x0) for c, wi in zip(parts, w))
    expected_r = sum(wi * c.residual(x0) for c, wi in zip(parts, w))
    torch.testing.assert_close(e, expected_e)
    torch.testing.assert_close(r, expected_r)
    torch.testing.assert_close(composite.error(x0), e)
    torch.testing.assert_close(composite.residual(x0), r)
    for ri, c in zip(composite.residuals(x0), parts):
        torch.testing.assert_close(ri, c.residual(x0))


@given(a=weights, b=weights, seed=st.integers(0, 2**16))
def test_scaling_multiplies_weights_and_errors(a, b, seed):
    c, x0 = _parts()[0], _x(seed)
    torch.testing.assert_close((a * c).error(x0), a * c.error(x0))
    torch.testing.assert_close((c * a).error(x0), (a * c).error(x0))
    assert (a * (b * c)).weights == pytest.approx((a * b,))
    torch.testing.assert_close((a * (c + c)).error(x0), 2 * a * c.error(x0))


@given(seed=st.integers(0, 2**16))
def test_addition_is_associative_and_sums_flatten(seed):
    a, b, c = _parts()
    x0 = _x(seed)
    left, right = (a + b) + c, a + (b + c)
    assert left.constraints == right.constraints == (a, b, c)
    assert left.weights == right.weights == (1.0, 1.0, 1.0)
    torch.testing.assert_close(left.error(x0), right.error(x0))
    assert sum([a, b, c]).constraints == (a, b, c)  # sum() starts from 0
    assert (0 + a) is a


def test_the_error_is_minus_the_gradient_of_the_composite_loss():
    """Linear parts descend 0.5 ||y - A x||^2, nonlinear parts their loss: e = -grad sum w_i L_i."""
    composite = Composite(list(zip(_parts(), (0.7, 2.0, 0.3))))
    x = _x(5).requires_grad_(True)
    (g,) = torch.autograd.grad(composite.loss(x).sum(), x)
    torch.testing.assert_close(composite.error(x.detach()), -g)


def test_the_combined_residual_is_the_weighted_sum_of_norms_not_of_squares():
    mask = _mask(slice(0, 4)).float()
    c = cd.Inpainting(torch.ones(1, 1, 8, 8), mask)
    x0 = torch.zeros(1, 1, 8, 8)
    assert float((3.0 * c).residual(x0)) == pytest.approx(3.0 * math.sqrt(32))  # 32 known pixels off by 1
    assert float((1.0 * c).residual(x0)) == pytest.approx(float(c.residual(x0)))


@pytest.mark.parametrize("weight, error", [(-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
                                           (True, TypeError), ("1", TypeError)])
def test_weights_must_be_finite_non_negative_numbers(weight, error):
    c = _parts()[0]
    with pytest.raises(error, match="weight"):
        Composite([(c, weight)])
    if not isinstance(weight, str):
        with pytest.raises(error, match="weight"):
            check_weight(weight)
    if isinstance(weight, float):
        with pytest.raises(error, match="weight"):
            weight * c


def test_malformed_parts_are_rejected():
    c = _parts()[0]
    with pytest.raises(ValueError, match="at least one"):
        Composite([])
    with pytest.raises(TypeError, match="part 1"):
        Composite([c, "inpainting"])
    with pytest.raises(TypeError, match="part 0"):
        Composite([(c, 1.0, 2.0)])
    with pytest.raises(TypeError, match="one constraint"):
        Composite(c)
    with pytest.raises(TypeError):
        c + 1.0


def test_batch_sizes_are_delegated_and_must_agree(gaussian):
    two = cd.Inpainting(_x(1, batch=2), _mask(slice(0, 4)))
    three = cd.Inpainting(_x(1, batch=3), _mask(slice(0, 4)))
    shared = cd.Inpainting(_x(1, batch=1), _mask(slice(4, 8)))
    assert (two + shared).batch_size == 2 and (shared + shared).batch_size is None
    with pytest.raises(ValueError, match=r"batch sizes disagree: part 0 \(Inpainting\) has 2, part 1 \(Inpainting\) has 3"):
        two + three
    sampler = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=2, inner_steps=1)
    with pytest.raises(ValueError, match="batch sizes disagree"):
        sampler.sample(two + shared, batch_size=3, progress=False)


def test_validate_names_the_part_that_does_not_fit(gaussian32):
    good = cd.Inpainting(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    bad = cd.SuperResolution(torch.zeros(1, 1, 3, 3), 2)
    with pytest.raises(ValueError, match=r"part 1 \(SuperResolution\)"):
        (good + bad).validate(SHAPE)
    with pytest.raises(ValueError, match=r"part 1 \(SuperResolution\)"):
        cd.ConstrainedSampler(gaussian32, cd.InexactNewton(), steps=2).sample(good + bad, progress=False)


def test_part_outputs_of_the_wrong_shape_are_caught():
    class Flat(cd.Constraint):
        def error(self, x0):
            return x0.flatten(1)

        def residual(self, x0):
            return x0.flatten(1).norm(dim=1)

    with pytest.raises(ValueError, match=r"part 1 \(Flat\) returned an error of shape"):
        (_parts()[0] + Flat()).error(_x(0))


def test_parts_on_another_dtype_or_device_are_brought_to_x0():
    """A float32 part (e.g. a classifier) inside a float64 problem: its error and residual are cast to x0's."""
    c32 = cd.Inpainting(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    composite = c32 + _parts()[0]
    e, r = composite.error_and_residual(_x(3))
    assert e.dtype == r.dtype == torch.float64


def test_discrepancy_of_a_composite_sums_the_parts_levels():
    a = cd.Inpainting(torch.zeros(1, 1, 8, 8), _mask(slice(0, 4)).float(), noise_std=0.1)  # m = 32
    b = cd.SuperResolution(torch.zeros(1, 1, 4, 4), 2, noise_std=0.2)  # m = 16
    level = (a + 0.5 * b).discrepancy(2.0)
    assert float(level) == pytest.approx(2 * 0.1 * math.sqrt(32) + 0.5 * 2 * 0.2 * 4, rel=1e-6)
    with pytest.raises(ValueError, match="part 1 of the Composite: Quadratic has no noise_std"):
        (a + Quadratic()).discrepancy()


def test_sampling_a_sum_of_two_inpaintings_satisfies_both(gaussian):
    """Two disjoint known regions as two parts: both residuals fall tenfold against unconstrained sampling."""
    truth = gaussian.sample_prior(2, torch.Generator().manual_seed(0))
    top, bottom = cd.Inpainting(truth, _mask(slice(0, 3))), cd.Inpainting(truth, _mask(slice(5, 8)))
    both = top + bottom
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    fit = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=10, inner_steps=5).sample(both, generator=gens(),
                                                                                                 progress=False)
    free = cd.ConstrainedSampler(gaussian, cd.InexactNewton(), steps=10, inner_steps=0).sample(both, generator=gens(),
                                                                                                  progress=False)
    for part in (top, bottom):
        assert bool((part.residual(fit.sample) < 0.1 * part.residual(free.sample)).all())
    torch.testing.assert_close(fit.final_residual, top.residual(fit.sample) + bottom.residual(fit.sample))


class _Darkness(cd.NonlinearConstraint):
    """A nonlinear pixel "style": the mean intensity should be -0.5."""

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).mean(dim=1) + 0.5) ** 2


def test_a_latent_inpainting_plus_a_decoded_pixel_style_compose_on_a_latent_model(tmp_path):
    """Parts in different spaces of a latent model (both take z0_hat): latent inpainting + a decoded style."""
    from tiny_pipelines import tiny_sd

    tiny_sd(tmp_path).save_pretrained(tmp_path / "sd")
    den = cd.StableDiffusionDenoiser.from_pretrained(tmp_path / "sd").condition(prompt="")
    H, W = den.height, den.width
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.ones(1, 1, H, W)
    mask[..., : W // 2] = 0
    latent = cd.latent_inpainting(den, image, mask)
    style = cd.DecodedConstraint(_Darkness(), den.codec)
    composite = latent + 0.5 * style
    z = torch.randn(1, *den.sample_shape, generator=torch.Generator().manual_seed(2))
    e = composite.error(z)
    torch.testing.assert_close(e, latent.error(z) + 0.5 * style.error(z))
    sampler = cd.ConstrainedSampler(den, cd.InexactNewton(), steps=3, inner_steps=2)
    result = sampler.sample(composite, generator=torch.Generator().manual_seed(0), progress=False)
    r_latent, r_style = composite.residuals(result.sample)
    assert bool(result.images.isfinite().all()) and bool(torch.isfinite(r_latent).all() & torch.isfinite(r_style).all())
    free = cd.ConstrainedSampler(den, cd.InexactNewton(), steps=3, inner_steps=0).sample(
        composite, generator=torch.Generator().manual_seed(0), progress=False)
    assert float(r_latent) < float(latent.residual(free.sample))  # the latent part is enforced


@pytest.fixture(scope="module")
def mnist_ddpm():
    return cd.models.load("mnist-ddpm")


def test_inpainting_plus_class_guidance_on_mnist_keeps_the_known_half_and_reads_the_label(mnist_ddpm):
    """The example: the bottom half of four test digits is known; class guidance asks for their digit.

    The shipped classifier must read the requested label in at least 3 of 4 samples, and the
    known half must stay close (median known-pixel residual below a fifth of unconstrained
    sampling's, i.e. a per-pixel RMS error below 0.1 on [-1, 1])."""
    from constrained_diffusion.evaluation.digits import read_digits

    torch.set_num_threads(2)
    images, labels = cd.data.mnist("held-out")
    idx = torch.tensor([110, 160, 210, 260])  # a 2, a 3, a 4 and a 5
    truth, wanted = images[idx], labels[idx]
    mask = torch.ones(1, 1, 32, 32)
    mask[..., :16, :] = 0  # the top half is missing
    keep = cd.Inpainting(truth, mask)
    constraint = keep + 20.0 * cd.constraints.mnist_class_guidance(wanted)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(4)]  # noqa: E731
    result = cd.ConstrainedSampler(mnist_ddpm, cd.InexactNewton(), steps=10, inner_steps=5).sample(
        constraint, generator=gens(), progress=False)
    free = cd.ConstrainedSampler(mnist_ddpm, cd.InexactNewton(), steps=10, inner_steps=0).sample(
        constraint, generator=gens(), progress=False)
    read = read_digits(result.images)
    assert int((read == wanted).sum()) >= 3, (read.tolist(), wanted.tolist())
    r_keep, r_class = constraint.residuals(result.sample)
    r_free = keep.residual(free.sample)
    assert float(r_keep.median()) < 0.2 * float(r_free.median()), (r_keep.tolist(), r_free.tolist())
    assert float(r_keep.median()) < 0.1 * math.sqrt(512)
    assert float(r_class.mean()) < float(constraint.residuals(free.sample)[1].mean())
