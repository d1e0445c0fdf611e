"""Tests of the deepinv plugin: deepinv's operators as constraints, by class and by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("deepinv", reason="deepinv not installed (pip install -e plugins/deepinv; see its README)")
pytest.importorskip("cd_deepinv", reason="plugin not installed: pip install -e plugins/deepinv")
import deepinv
import hypothesis.strategies as st
import torch
from cd_deepinv import (
    LinearPhysicsConstraint,
    NonlinearPhysicsConstraint,
    PhysicsConstraint,
    build_physics,
    load_physics_constraint,
    observe,
    physics_dtype,
)
from hypothesis import given, settings
from pydantic import ValidationError

import constrained_diffusion as cd
from constrained_diffusion.constraints import registry

# ------------------------------------------------------------------------------------------
# the operator registry, after deepinv's own tests (deepinv/tests/test_physics.py: OPERATORS
# and find_operator): a name -> (physics builder, sample shape (C, H, W))
# ------------------------------------------------------------------------------------------
N = 16  # image side; small so every operator is cheap on a CPU


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inpainting_mask() -> torch.Tensor:
    return (torch.rand(1, N, N, generator=_gen(3)) > 0.5).float()


def _mri_mask() -> torch.Tensor:
    mask = torch.zeros(N, N)
    mask[:, ::2] = 1
    mask[:, N // 2 - 2:N // 2 + 2] = 1
    return mask


OPERATORS: dict[str, tuple[Callable[[], deepinv.physics.LinearPhysics], tuple[int, int, int]]] = {
    "blur_fft": (lambda: deepinv.physics.BlurFFT(img_size=(1, N, N), filter=deepinv.physics.functional.gaussian_blur(sigma=(1.5, 1.5))), (1, N, N)),
    "blur_valid": (lambda: deepinv.physics.Blur(filter=deepinv.physics.functional.gaussian_blur(sigma=(1.0, 2.0), angle=30.0), padding="valid"),
                   (1, N, N)),
    "downsampling_bicubic_x2": (lambda: deepinv.physics.Downsampling(img_size=(1, N, N), factor=2, filter="bicubic"), (1, N, N)),
    "super_resolution_x4": (lambda: deepinv.physics.Downsampling(img_size=(1, N, N), factor=4, filter="gaussian"), (1, N, N)),
    "inpainting": (lambda: deepinv.physics.Inpainting(img_size=(1, N, N), mask=_inpainting_mask()), (1, N, N)),
    "compressed_sensing": (lambda: deepinv.physics.CompressedSensing(m=60, img_size=(1, N, N), rng=_gen(4)), (1, N, N)),
    "denoising": (lambda: deepinv.physics.Denoising(deepinv.physics.GaussianNoise(sigma=0.1)), (1, N, N)),
    "mri": (lambda: deepinv.physics.MRI(mask=_mri_mask(), img_size=(N, N)), (2, N, N)),
    "tomography": (lambda: deepinv.physics.Tomography(angles=12, img_width=N, circle=False, normalize=True), (1, N, N)),
    "decolorize": (lambda: deepinv.physics.Decolorize(), (3, N, N)),
    "single_pixel": (lambda: deepinv.physics.SinglePixelCamera(m=40, img_size=(1, N, N)), (1, N, N)),
}

_BUILT: dict[str, deepinv.physics.LinearPhysics] = {}


def find_operator(name: str) -> tuple[deepinv.physics.LinearPhysics, tuple[int, int, int]]:
    """The operator ``name`` (built once per session) and its sample shape."""
    build, shape = OPERATORS[name]
    if name not in _BUILT:
        _BUILT[name] = build()
    return _BUILT[name], shape


def _constraint(name: str, batch: int = 2, seed: int = 0) -> tuple[LinearPhysicsConstraint, torch.Tensor]:
    physics, shape = find_operator(name)
    x = torch.randn(batch, *shape, generator=_gen(seed))
    c = PhysicsConstraint(physics, observe(physics, x))
    c.validate(shape)
    return c, x


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() * b.double()).flatten(1).sum(dim=1)


# ------------------------------------------------------------------------------------------
# laws
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPERATORS))
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-2, 1e2))
def test_adjointness_over_the_operator_zoo(name, seed, scale):
    """<A x, v> = <x, A^T v> for the constraint's forward and adjoint, random x and v."""
    c, _ = _constraint(name)
    g = _gen(seed)
    physics, shape = find_operator(name)
    x = scale * torch.randn(2, *shape, generator=g)
    v = torch.randn(2, *c.y.shape[1:], generator=g)
    Ax, ATv = c.forward(x), c.adjoint(v)
    assert Ax.shape == (2, *c.y.shape[1:]) and ATv.shape == x.shape
    lhs, rhs = _inner(Ax, v), _inner(x, ATv)
    tol = 1e-4 * Ax.double().flatten(1).norm(dim=1) * v.double().flatten(1).norm(dim=1) + 1e-8
    assert bool(((lhs - rhs).abs() <= tol).all()), (name, lhs, rhs)


@pytest.mark.parametrize("name", sorted(OPERATORS))
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_error_is_the_negative_gradient_of_half_the_squared_residual(name, seed):
    """e = A^T (y - A x0) (deepinv's closed-form adjoint) equals -grad 0.5 ||y - A x0||^2 by autograd; r = ||y - A x0||."""
    c, _ = _constraint(name)
    _, shape = find_operator(name)
    x0 = torch.randn(2, *shape, generator=_gen(seed))
    e, r = c.error_and_residual(x0)
    x = x0.clone().requires_grad_(True)
    half = 0.5 * (c.y - c.physics.A(x)).flatten(1).pow(2).sum()
    (grad,) = torch.autograd.grad(half, x)
    torch.testing.assert_close(e, -grad, rtol=1e-4, atol=1e-4 * float(grad.abs().max()) + 1e-6)
    torch.testing.assert_close(r, (c.y - c.physics.A(x0)).flatten(1).norm(dim=1))


@pytest.mark.parametrize("name", ["blur_fft", "inpainting", "compressed_sensing", "denoising"])
def test_the_truth_satisfies_the_constraint_and_noise_is_never_added(name):
    c, x = _constraint(name)
    assert float(c.residual(x).max()) <= 1e-4 * float(c.y.abs().max() + 1)
    # the physics' forward pass, physics(x), is noisy for "denoising"; the constraint stays deterministic
    torch.testing.assert_close(c.residual(x), c.residual(x))


def test_noise_std_comes_from_a_gaussian_noise_model_in_library_units():
    physics = deepinv.physics.Inpainting(img_size=(1, N, N), mask=0.5, noise_model=deepinv.physics.GaussianNoise(sigma=0.05), rng=_gen(1))
    y = observe(physics, torch.zeros(1, 1, N, N), noise=True)
    assert float(y.std()) > 0.01  # the simulated observation is noisy...
    c = PhysicsConstraint(physics, y)
    assert float(c.noise_std) == pytest.approx(0.05)
    assert float(c.discrepancy(tau=1.0)) == pytest.approx(0.05 * N)  # tau sigma sqrt(m), m = N * N entries of y
    assert float(PhysicsConstraint(physics, y, physics_range="[0,1]").noise_std) == pytest.approx(0.1)  # ...one [0,1] unit is two
    assert float(PhysicsConstraint(physics, y, noise_std=0.3).noise_std) == pytest.approx(0.3)  # given: it wins
    assert PhysicsConstraint(deepinv.physics.Denoising(deepinv.physics.PoissonNoise()), y).noise_std is None
    with pytest.raises(ValueError, match="noise_std must be finite and >= 0"):
        PhysicsConstraint(physics, y, noise_std=-1.0)
    with pytest.raises(ValueError, match="noise_std is for linear physics only"):
        PhysicsConstraint(_saturating_camera(), torch.zeros(1, 1, 8, 8), noise_std=0.1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_zero_one_range_is_the_same_affine_constraint_in_library_units(seed):
    """A u = y with u = (x + 1) / 2  <=>  A x = 2 y - A 1: same residual (x2) and the same error as [-1,1] data."""
    physics, shape = find_operator("blur_fft")
    g = _gen(seed)
    truth, x0 = torch.randn(2, *shape, generator=g).clamp(-1, 1), torch.randn(2, *shape, generator=g)
    unit = PhysicsConstraint(physics, observe(physics, truth, "[0,1]"), physics_range="[0,1]")
    sym = PhysicsConstraint(physics, observe(physics, truth))
    assert float(unit.residual(truth).max()) < 1e-4
    torch.testing.assert_close(unit.residual(x0), sym.residual(x0), rtol=1e-4, atol=1e-4)
    physics_units = (unit.y_physics - physics.A((x0 + 1) / 2)).flatten(1).norm(dim=1)
    torch.testing.assert_close(unit.residual(x0), 2 * physics_units, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unit.error(x0), sym.error(x0), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------
# linear or not: the class picks
# ------------------------------------------------------------------------------------------
def _saturating_camera() -> deepinv.physics.Physics:
    """A non-linear deepinv physics: a blur seen through a saturating sensor response, A(x) = tanh(2 K x)."""
    blur = deepinv.physics.BlurFFT(img_size=(1, 8, 8), filter=deepinv.physics.functional.gaussian_blur(sigma=(1.0, 1.0)))
    return deepinv.physics.Physics(A=lambda x, **kwargs: torch.tanh(2 * blur.A(x)))


def test_the_constructor_picks_linear_or_nonlinear():
    blur, _ = find_operator("blur_fft")
    lin = PhysicsConstraint(blur, torch.zeros(1, 1, N, N))
    assert isinstance(lin, LinearPhysicsConstraint) and isinstance(lin, cd.LinearConstraint) and isinstance(lin, PhysicsConstraint)
    pr = _saturating_camera()
    assert not isinstance(pr, deepinv.physics.LinearPhysics)
    non = PhysicsConstraint(pr, torch.zeros(1, 1, 8, 8))
    assert isinstance(non, NonlinearPhysicsConstraint) and isinstance(non, cd.NonlinearConstraint)
    assert not isinstance(non, cd.LinearConstraint)
    with pytest.raises(TypeError, match="must be a deepinv.physics.LinearPhysics"):
        LinearPhysicsConstraint(pr, torch.zeros(1, 1, 8, 8))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_nonlinear_loss_is_the_squared_misfit_and_error_its_negative_gradient(seed):
    """L(x) = ||y - A(x)||^2 per sample for a saturating camera; e = -grad L = 2 J^T (y - A(x))."""
    pr = _saturating_camera()
    g = _gen(seed)
    truth, x0 = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    c = PhysicsConstraint(pr, observe(pr, truth))
    c.validate((1, 8, 8))
    assert float(c.residual(truth).max()) <= 1e-6 * float(c.y.abs().max()) ** 2 + 1e-6
    r = c.y - pr.A(x0)
    torch.testing.assert_close(c.residual(x0), r.flatten(1).pow(2).sum(dim=1), rtol=1e-5, atol=1e-5)
    _, vjp = torch.func.vjp(pr.A, x0)
    (jt_r,) = vjp(r)
    torch.testing.assert_close(c.error(x0), 2 * jt_r, rtol=1e-4, atol=1e-4 * float(jt_r.abs().max()))


# ------------------------------------------------------------------------------------------
# errors raised early, naming the parameter
# ------------------------------------------------------------------------------------------
def test_bad_physics_and_y_are_rejected_at_construction():
    blur, _ = find_operator("blur_fft")
    with pytest.raises(TypeError, match="physics must be a deepinv.physics.Physics"):
        PhysicsConstraint(torch.nn.Identity(), torch.zeros(1, 1, N, N))
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        PhysicsConstraint(blur, [[0.0]])
    with pytest.raises(TypeError, match="y must be a real floating-point tensor, got dtype torch.int64"):
        PhysicsConstraint(blur, torch.zeros(1, 1, N, N, dtype=torch.long))
    with pytest.raises(TypeError, match="complex"):
        PhysicsConstraint(blur, torch.zeros(1, 1, N, N, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"y has dtype torch.float64 but the physics computes in torch.float32"):
        PhysicsConstraint(blur, torch.zeros(1, 1, N, N, dtype=torch.float64))
    with pytest.raises(ValueError, match="y must have a batch dimension"):
        PhysicsConstraint(blur, torch.zeros(N))
    with pytest.raises(ValueError, match="y has non-finite values"):
        PhysicsConstraint(blur, torch.full((1, 1, N, N), float("nan")))
    with pytest.raises(ValidationError, match="physics_range"):
        PhysicsConstraint(blur, torch.zeros(1, 1, N, N), physics_range="[0,255]")


def test_a_physics_on_another_device_is_rejected():
    physics = deepinv.physics.BlurFFT(img_size=(1, N, N), filter=deepinv.physics.functional.gaussian_blur(sigma=(1.0, 1.0))).to("meta")
    with pytest.raises(ValueError, match="y is on cpu but the physics is on meta"):
        PhysicsConstraint(physics, torch.zeros(1, 1, N, N))


def test_a_float64_physics_takes_float64_y_and_float32_samples():
    physics = deepinv.physics.CompressedSensing(m=20, img_size=(1, 8, 8), dtype=torch.float64, rng=_gen(0))
    assert physics_dtype(physics) == torch.float64
    x = torch.randn(2, 1, 8, 8)
    c = PhysicsConstraint(physics, observe(physics, x))
    assert c.y.dtype == torch.float64
    e, r = c.error_and_residual(x)  # samples stay float32; the physics computes in float64
    assert e.dtype == torch.float32 and float(r.max()) < 1e-5


@pytest.mark.parametrize("name, sample_shape, message", [
    ("denoising", (1, 2 * N, 2 * N), r"y has shape \(2, 1, 16, 16\) but physics Denoising.A maps samples of shape \(1, 32, 32\) to \(B, 1, 32, 32\)"),
    ("blur_fft", (1, 2 * N, 2 * N), r"physics BlurFFT cannot be applied to samples of shape \(1, 32, 32\)"),
    ("blur_fft", (N, N), r"needs image samples of shape \(C, H, W\), got \(16, 16\)"),
    ("decolorize", (1, N, N), r"physics Decolorize cannot be applied to samples of shape \(1, 16, 16\)"),
    ("compressed_sensing", (1, 8, 8), r"physics CompressedSensing cannot be applied to samples of shape \(1, 8, 8\)"),
])
def test_validate_names_the_shape_that_does_not_fit(name, sample_shape, message):
    c, _ = _constraint(name)
    with pytest.raises(ValueError, match=message):
        c.validate(sample_shape)


def test_nonlinear_validate_and_batch_checks():
    pr = _saturating_camera()
    c = PhysicsConstraint(pr, torch.zeros(2, 1, 8, 8))
    assert c.batch_size == 2
    c.validate((1, 8, 8))
    with pytest.raises(ValueError, match=r"y has shape \(2, 1, 4, 4\) but physics Physics.A maps"):
        PhysicsConstraint(pr, torch.zeros(2, 1, 4, 4)).validate((1, 8, 8))
    with pytest.raises(ValueError, match="y has batch 2 but the samples have batch 3"):
        c.loss(torch.zeros(3, 1, 8, 8))


def test_the_sampler_rejects_a_mismatched_constraint_before_any_network_call():
    c, _ = _constraint("blur_fft")  # a 16 x 16 blur; the MNIST model samples 32 x 32
    with pytest.raises(ValueError, match=r"physics BlurFFT cannot be applied to samples of shape \(1, 32, 32\)"):
        cd.ConstrainedSampler(cd.models.load("mnist-ddpm"), "inexact-newton", steps=2, inner_steps=1).sample(c, progress=False)


# ------------------------------------------------------------------------------------------
# the entry point
# ------------------------------------------------------------------------------------------
BLUR_KWARGS = {"img_size": [1, 32, 32], "filter": {"gaussian_blur": {"sigma": [1.5, 1.5]}}}


def test_registry_builds_a_physics_constraint_by_class_name():
    assert "deepinv" in registry.names()
    x = cd.data.demo_digits()[0][:2]
    c = cd.constraints.load("deepinv", physics="BlurFFT", physics_kwargs=BLUR_KWARGS, x=x)
    assert isinstance(c, LinearPhysicsConstraint) and isinstance(c.physics, deepinv.physics.BlurFFT)
    torch.testing.assert_close(c.y, c.physics.A(x))
    assert float(c.residual(x).max()) < 1e-4
    blur = build_physics("BlurFFT", BLUR_KWARGS)
    d = load_physics_constraint(blur, y=c.y)
    assert d.physics is blur


@pytest.mark.parametrize("kwargs, error, message", [
    ({"physics": "NoSuchPhysics", "y": torch.zeros(1, 1)}, ValueError, "'NoSuchPhysics' is not a deepinv.physics class; known: .*BlurFFT"),
    ({"physics": "BlurFFT", "physics_kwargs": {"img_size": [1, 8, 8], "filter": {"box": {}}}, "y": torch.zeros(1, 1, 8, 8)},
     ValueError, r"physics_kwargs\['filter'\]: a mapping must name one filter"),
    ({"physics": "BlurFFT", "physics_kwargs": {"nope": 1}, "y": torch.zeros(1, 1)}, ValueError, "deepinv.physics.BlurFFT rejects"),
    ({"physics": "Denoising"}, ValueError, "exactly one of y"),
    ({"physics": "Denoising", "y": torch.zeros(1, 1), "x": torch.zeros(1, 1)}, ValueError, "exactly one of y"),
    ({"physics": deepinv.physics.Denoising(), "physics_kwargs": {"a": 1}, "y": torch.zeros(1, 1)}, ValueError, "only for a physics given by name"),
    ({"physics": 3, "y": torch.zeros(1, 1)}, TypeError, "physics must be a deepinv.physics class name"),
    ({"physics": "Denoising", "x": [0.0]}, TypeError, "x must be a floating-point tensor"),
])
def test_registry_errors_name_the_parameter(kwargs, error, message):
    with pytest.raises(error, match=message):
        cd.constraints.load("deepinv", **kwargs)


def test_cli_samples_a_deepinv_constraint(tmp_path: Path, capsys):
    from constrained_diffusion.cli.main import main

    out = tmp_path / "sr.png"
    main(["sample", "--constraint", "deepinv", "--arg", "physics=Downsampling",
          "--arg", 'physics_kwargs={"img_size": [1, 32, 32], "factor": 4, "filter": "bicubic"}', "--arg", "x=@digit",
          "--steps", "3", "--inner-steps", "1", "--out", str(out), "--quiet"])
    assert out.is_file() and "constraint deepinv" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# the shipped DDPM: deblurring test digits
# ------------------------------------------------------------------------------------------
def test_shipped_ddpm_deblurring_cuts_the_residual_tenfold():
    """Gaussian blur (sigma 1.5 px) of 2 test digits; 10 DDIM steps, 5 inexact-Newton inner steps, same noise."""
    ddpm = cd.models.load("mnist-ddpm")
    digits = cd.data.mnist("held-out")[0][:2]
    blur = build_physics("BlurFFT", BLUR_KWARGS)
    c = PhysicsConstraint(blur, observe(blur, digits))
    x_T = torch.randn(2, 1, 32, 32, generator=_gen(1))
    free = cd.ConstrainedSampler(ddpm, steps=10, inner_steps=0).sample(c, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(ddpm, "inexact-newton", steps=10, inner_steps=5).sample(c, x_T=x_T, progress=False)
    assert bool((fit.final_residual * 10 <= free.final_residual).all()), (fit.final_residual, free.final_residual)
    # and the deblurred digit is closer to the truth than the unconstrained one
    assert bool(((fit.sample - digits).flatten(1).norm(dim=1) < (free.sample - digits).flatten(1).norm(dim=1)).all())
