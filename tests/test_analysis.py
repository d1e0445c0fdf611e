"""The Jacobian analysis on a tiny random network and on the analytic denoiser, against dense references."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion import analysis


@pytest.fixture(scope="module")
def tiny(tiny_unet_factory) -> cd.NetworkDenoiser:
    return cd.NetworkDenoiser(tiny_unet_factory(), cd.VPSchedule.linear(), (1, 8, 8))


def _dense(model, x, t):
    f = lambda z: model.predict_x0(z.reshape(1, 1, 8, 8), t).flatten()  # noqa: E731
    return torch.autograd.functional.jacobian(f, x.flatten()).double()


def test_jacobian_matches_dense_autograd(tiny):
    x, t = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor(400)
    J = analysis.jacobian(tiny, x, t, chunk=24)
    assert J.shape == (64, 64)
    assert torch.allclose(J, _dense(tiny, x, t), atol=1e-5)


def test_matvecs_match_dense(tiny):
    x, t = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor(700)
    J = _dense(tiny, x, t)
    v = torch.randn(64, dtype=torch.float64)
    jv, jtv = analysis.jvp_matvec(tiny, x, t), analysis.vjp_matvec(tiny, x, t)
    assert torch.allclose(jv(v), J @ v, atol=1e-4)
    assert torch.allclose(jtv(v), J.T @ v, atol=1e-4)
    assert torch.allclose(analysis.symmetric_part(jv, jtv)(v), 0.5 * (J + J.T) @ v, atol=1e-4)
    assert torch.allclose(analysis.antisymmetric_part(jv, jtv)(v), 0.5 * (J - J.T) @ v, atol=1e-4)


def test_asymmetry(gaussian4, skewed4):
    t = torch.tensor(500)
    sym = gaussian4.jacobian(t)
    skew = skewed4.jacobian(t)
    assert analysis.asymmetry(sym) < 1e-12
    assert analysis.asymmetry(skew) > 0.1


def test_eigenvector_similarity_pools():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    J = Q @ torch.diag(torch.linspace(1.0, 10.0, 30, dtype=torch.float64)) @ Q.T
    # a matrix and its inverse share eigenvectors: matching among all of them finds each one
    assert analysis.eigenvector_similarity(J, J, k=5, pool="all") == pytest.approx(1.0, abs=1e-8)
    # J's top-5 are J^-1's bottom-5: orthogonal to J^-1's top-5
    assert analysis.eigenvector_similarity(J, J, k=5, pool="top-k") < 1e-8
    other = torch.randn(30, 30, generator=g, dtype=torch.float64) + 10 * torch.eye(30, dtype=torch.float64)
    assert analysis.eigenvector_similarity(J, other, k=5, pool="all") < 0.9
    with pytest.raises(ValueError, match="k must lie"):
        analysis.eigenvector_similarity(J, J, k=0)


def test_direction_alignment():
    t = torch.tensor(300)
    model = cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5, skew=0.3)
    J = model.jacobian(t)
    e = torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = analysis.direction_alignment(J, e, rcond=1e-12)
    assert out["reduction_newton"] == pytest.approx(1.0, abs=1e-8)
    for name in ("Je", "JTe", "e"):
        assert -1.0 <= out[f"cos_{name}"] <= 1.0 and 0.0 <= out[f"reduction_{name}"] <= 1.0
    # for J = c I every direction is the Newton direction
    iso = analysis.direction_alignment(2.0 * torch.eye(16, dtype=torch.float64), e)
    assert iso["cos_Je"] == pytest.approx(1.0) and iso["reduction_e"] == pytest.approx(1.0)


def test_arnoldi_finds_the_largest_eigenvalue():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([16.85, 8.45], dtype=torch.float64), torch.rand(198, generator=g, dtype=torch.float64)])
    A = Q @ torch.diag(lam) @ Q.T
    ritz = analysis.arnoldi_eigenvalues(lambda v: A @ v, n=25, dim=200, generator=g)
    assert abs(ritz[0]) == pytest.approx(16.85, rel=1e-6) and abs(ritz[1]) == pytest.approx(8.45, rel=1e-4)
    full = analysis.arnoldi_eigenvalues(lambda v: A[:10, :10] @ v, n=10, dim=10, generator=g)
    assert torch.allclose(full.abs().sort().values, torch.linalg.eigvals(A[:10, :10]).abs().sort().values)


def test_arnoldi_on_a_network_jacobian(tiny):
    x, t = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor(900)
    J = _dense(tiny, x, t)
    ritz = analysis.arnoldi_eigenvalues(analysis.jvp_matvec(tiny, x, t), n=64, dim=64, generator=torch.Generator().manual_seed(0))
    assert float(ritz[0].abs()) == pytest.approx(float(torch.linalg.eigvals(J).abs().max()), rel=1e-3)


def test_pixel_directions_on_the_analytic_denoiser():
    from constrained_diffusion.analysis.directions import directions_grid, pixel_directions

    model = cd.GaussianDenoiser.smooth((1, 4, 4), length_scale=1.5, skew=0.3, dtype=torch.float64)
    x0 = model.sample_prior(1, torch.Generator().manual_seed(0))
    out = pixel_directions(model, x0, t=300, pixel=(1, 2), step_scale=0.5, rcond=1e-12)
    J = model.jacobian(torch.tensor(300))
    e = out.error
    assert e.shape == (16,) and float(e.sum()) == 1.0 and float(e[1 * 4 + 2]) == 1.0
    assert torch.allclose(out.directions["Je"], J @ e) and torch.allclose(out.directions["JTe"], J.T @ e)
    assert torch.allclose(J @ out.directions["J+e"], e, atol=1e-8)  # the Newton direction moves x0_hat by e
    assert set(out.x0_after) == {"Je", "J+e", "JTe"} and out.x0_before.shape == (1, 1, 4, 4)
    grid = directions_grid(out, model.sample_shape, scale=2)
    assert grid.shape[-2:] == (2 * 8 + 3 * 2, 4 * 8 + 5 * 2)  # 2 rows x 4 columns of 8x8 tiles, 2-pixel padding
    with pytest.raises(ValueError, match="--pixel must lie inside the 4x4 image"):
        pixel_directions(model, x0, t=300, pixel=(4, 0))
