"""The precision-aware finite-difference step and the dtype-safe forward-mode JVP."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import constrained_diffusion as cd
from constrained_diffusion.linalg import H_PAPER, default_h, fd_jvp, resolve_h, unit_roundoff

HALF = [torch.float16, torch.bfloat16]


def test_float32_keeps_the_papers_step_exactly():
    assert default_h(torch.float32) == 0.005 == H_PAPER
    assert default_h(torch.float64) == 0.005
    assert resolve_h(None, 30 * torch.ones(2, 3)) == 0.005  # the scale is not applied in float32
    assert cd.InexactNewton().h is None and cd.ExactNewton().h is None


def test_half_precision_and_tf32_steps():
    assert default_h(torch.float16) == pytest.approx(5 * 2**-5.5)
    assert default_h(torch.bfloat16) == pytest.approx(5 * 2**-4)
    assert default_h(torch.float32, tf32=True) == pytest.approx(default_h(torch.float16))
    assert default_h(torch.bfloat16, scale=4.0) == pytest.approx(4 * default_h(torch.bfloat16))
    h = resolve_h(None, torch.cat([torch.ones(1, 4), 3 * torch.ones(1, 4)]).to(torch.bfloat16))
    assert h.shape == (2, 1) and h[1, 0] == pytest.approx(3 * h[0, 0])


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="h must be > 0"):
        fd_jvp(lambda x: x, torch.zeros(1, 2), torch.ones(1, 2), h=0.0)
    with pytest.raises(ValueError, match="scale"):
        default_h(torch.float16, scale=-1.0)
    with pytest.raises(TypeError, match="dtype"):
        unit_roundoff(torch.int32)
    with pytest.raises(ValueError, match="h must be > 0"):
        cd.EncodedConstraint(cd.Inpainting(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4)), codec=None, h=-1.0)


def _smooth(dtype: torch.dtype, dim: int):
    g = torch.Generator().manual_seed(dim)
    a = (torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5)
    f64 = lambda x: x @ a.T + 0.3 * torch.sin(x)  # noqa: E731
    return (lambda x: f64(x.double()).to(dtype)), f64


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([torch.float32, *HALF]), dim=st.integers(4, 64), seed=st.integers(0, 2**16),
       scale=st.floats(1e-3, 1e3))
def test_default_step_matches_the_exact_jvp_in_every_dtype(dtype, dim, seed, scale):
    """On a smooth function evaluated in ``dtype``, h=None gives cosine >= 0.99 with the exact JVP."""
    f, f64 = _smooth(dtype, dim)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, dim, generator=g, dtype=torch.float64)
    v = scale * torch.randn(3, dim, generator=g, dtype=torch.float64)
    exact = torch.func.jvp(f64, (x,), (v,))[1]
    approx = fd_jvp(f, x.to(dtype), v.float(), dtype=dtype)
    assert approx.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(approx.double(), exact).min() >= 0.99


@settings(max_examples=25, deadline=None)
@given(dtype=st.sampled_from([torch.float32, *HALF]), h=st.floats(1e-3, 1.0), seed=st.integers(0, 2**16))
def test_a_given_step_is_always_respected(dtype, h, seed):
    seen = []
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, generator=g).to(dtype)
    v = torch.randn(2, 5, generator=g)
    fx = x.clone()
    fd_jvp(lambda u: seen.append(u) or u, x, v, h, fx=fx, dtype=dtype)
    moved = (seen[0].double() - x.double()).abs().amax(dim=1)
    assert torch.allclose(moved, torch.full_like(moved, h), rtol=2e-2 if dtype in HALF else 1e-5, atol=2e-2 * abs(x).max().item())


def test_float32_results_are_unchanged_by_the_default():
    f, _ = _smooth(torch.float32, 8)
    x, v = torch.randn(2, 8), torch.randn(2, 8)
    assert torch.equal(fd_jvp(f, x, v), fd_jvp(f, x, v, h=0.005))


def test_encoded_constraint_step():
    pix = cd.Inpainting(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4))
    c = cd.EncodedConstraint(pix, codec=None)
    assert c.step(torch.zeros(1)) == 0.01
    assert c.step(torch.zeros(1, dtype=torch.bfloat16)) == pytest.approx(5 * 2**-4)
    assert cd.EncodedConstraint(pix, codec=None, h=0.02).step(torch.zeros(1, dtype=torch.bfloat16)) == 0.02


# --- tiny diffusers pipelines --------------------------------------------------------------
diffusers = pytest.importorskip("diffusers")
from constrained_diffusion.analysis.fd_precision import tiny_denoiser, tiny_pipeline, worst_cosine  # noqa: E402
from constrained_diffusion.solvers.exact_jvp import forward_jvp  # noqa: E402


@pytest.fixture(scope="module", params=["sd", "sd3", "flux"])
def pipeline(request):
    kind = request.param
    pipe = tiny_pipeline(kind)
    ref = tiny_denoiser(kind, torch.float32, pipe)
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(2, *ref.sample_shape, generator=g), torch.randn(2, *ref.sample_shape, generator=g)
    times = [ref.grid(10).times[i] for i in (0, 4, 8)]
    return kind, pipe, x, e, times, [forward_jvp(ref, x, t, e)[1] for t in times]


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_inexact_newton_direction_in_half_precision(pipeline, dtype):
    kind, pipe, x, e, times, refs = pipeline
    den = tiny_denoiser(kind, dtype, pipe)
    solver = cd.InexactNewton()
    for t, ref in zip(times, refs):
        xd = x.to(dtype)
        with torch.no_grad():
            d = solver.direction(den, xd, t, e, den(xd, t))
        assert worst_cosine(d, ref) >= (0.9999 if dtype == torch.float32 else 0.99), (kind, dtype, float(t))


@pytest.mark.parametrize("dtype", HALF)
def test_forward_jvp_with_a_float32_tangent_in_half_precision(pipeline, dtype):
    """The dual pass used to fail ("expected mat1 and mat2 to have the same dtype, float != Half")."""
    kind, pipe, x, e, times, refs = pipeline
    den = tiny_denoiser(kind, dtype, pipe)
    x0, jv = forward_jvp(den, x.to(dtype), times[1], e)
    assert x0.dtype == dtype and jv.dtype == torch.float32
    assert worst_cosine(jv, refs[1]) >= 0.99
    d = cd.ExactJVP().direction(den, x.to(dtype), times[1], e, x0)
    assert worst_cosine(d, refs[1]) >= 0.99
