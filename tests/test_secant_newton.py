"""SecantNewton: multi-secant J e / J^-1 e from the inner loop's own iterates, one FD only when the fit is poor."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import constrained_diffusion as cd
from constrained_diffusion.linalg.secant import lstsq_columns, secant_inverse, secant_jvp, secant_scale

TIMES = st.sampled_from([999, 500, 200, 50])
SEEDS = st.integers(0, 2**16)


@pytest.fixture(scope="module")
def affine(skewed4) -> cd.GaussianDenoiser:
    """Non-symmetric analytic denoiser on 1x4x4 images (D = 16), float64: x0_hat = M_t x_t exactly (conftest's ``skewed4``)."""
    return skewed4


def _apply(J: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (v.flatten(1) @ J.T).reshape(v.shape)


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)


# --- the kernel -----------------------------------------------------------------------------------
@given(seed=SEEDS, m=st.integers(1, 6), batch=st.integers(1, 3))
def test_kernel_reproduces_an_affine_map_on_the_span(seed, m, batch):
    """y_j = M s_j exactly => J_m v = M v for v in span(S), H_m w = S a for w = M S a; rho = 0."""
    g = torch.Generator().manual_seed(seed)
    D = 12
    M = torch.randn(batch, D, D, generator=g, dtype=torch.float64) + 3 * torch.eye(D, dtype=torch.float64)
    S = torch.randn(batch, D, m, generator=g, dtype=torch.float64)
    Y = M @ S
    a = torch.randn(batch, m, generator=g, dtype=torch.float64)
    v = torch.einsum("bdm,bm->bd", S, a)
    for gamma in (0.0, secant_scale(S, Y)):
        Jv, rho = secant_jvp(S, Y, v, gamma, rcond=1e-10)
        assert float(_rel(Jv, torch.einsum("bij,bj->bi", M, v)).max()) < 1e-9
        assert float(rho.max()) < 1e-9
        d, rho = secant_inverse(S, Y, torch.einsum("bij,bj->bi", M, v), gamma, rcond=1e-10)
        assert float(_rel(d, v).max()) < 1e-8
        assert float(rho.max()) < 1e-9


@given(seed=SEEDS)
def test_kernel_leaves_the_complement_to_gamma_and_zero_columns_alone(seed):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(1, 8, 2, generator=g, dtype=torch.float64)
    Y = torch.randn(1, 8, 2, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.cat([S[0], torch.randn(8, 1, generator=g, dtype=torch.float64)], dim=1))
    w = Q[:, 2].reshape(1, 8)  # orthogonal to span(S)
    Jw, rho = secant_jvp(S, Y, w, 2.5)
    assert torch.allclose(Jw, 2.5 * w, atol=1e-12) and abs(float(rho) - 1.0) < 1e-12
    padded = torch.cat([S, torch.zeros(1, 8, 3, dtype=torch.float64)], dim=2)
    c, _ = lstsq_columns(padded, w + S[..., 0])
    assert torch.allclose(c[0, :2], torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-10)
    assert torch.equal(c[0, 2:], torch.zeros(3, dtype=torch.float64))


def test_kernel_rejects_bad_shapes_and_rcond():
    with pytest.raises(ValueError, match="A \\(B, D, m\\)"):
        lstsq_columns(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="rcond"):
        lstsq_columns(torch.zeros(1, 3, 1), torch.zeros(1, 3), rcond=1.0)


# --- the solver on an affine denoiser ----------------------------------------------------------------
@settings(max_examples=15)
@given(t=TIMES, seed=SEEDS, calls=st.integers(1, 5), mode=st.sampled_from(["jvp", "inverse"]))
def test_secant_pairs_reproduce_the_jacobian_of_an_affine_denoiser(affine, t, seed, calls, mode):
    """After a few iterates at one t, a vector in the pairs' span gets the exact J e (J^-1 e) with no forward."""
    g = torch.Generator().manual_seed(seed)
    tt = torch.tensor(t)
    J = affine.jacobian(tt)
    solver = cd.SecantNewton(mode=mode, tol=1.0, rcond=1e-10)
    xs = []
    for _ in range(calls):
        x_t = torch.randn(2, *affine.sample_shape, generator=g, dtype=torch.float64)
        e = torch.randn(2, *affine.sample_shape, generator=g, dtype=torch.float64)
        solver.direction(affine, x_t, tt, e, affine(x_t, tt))
        xs.append(x_t)
    cur = solver._current
    assert cur is not None
    S, Y = cur.S.transpose(1, 2), cur.Y.transpose(1, 2)  # (B, D, m)
    # every stored pair is exact: y_j = J s_j (finite differences are exact on an affine map, up to rounding)
    assert torch.allclose(Y, torch.einsum("ij,bjm->bim", J, S), atol=1e-9)
    a = torch.randn(2, S.shape[2], generator=g, dtype=torch.float64)
    in_span = torch.einsum("bdm,bm->bd", S, a)
    e = in_span if mode == "jvp" else torch.einsum("ij,bj->bi", J, in_span)
    e = e.reshape(2, *affine.sample_shape)
    nfe = affine.nfe
    d = solver.direction(affine, xs[-1], tt, e, affine(xs[-1], tt))  # same x_t: no new secant pair
    assert affine.nfe == nfe + 1  # the x0 above only: the direction itself cost nothing
    want = _apply(J, e) if mode == "jvp" else in_span.reshape(e.shape)
    assert float(_rel(d, want).max()) < 1e-8
    assert not bool(solver.last_info.finite_difference.any())


@given(t=TIMES, seed=SEEDS)
def test_empty_history_pays_one_finite_difference_equal_to_inexact_newton(affine, t, seed):
    g = torch.Generator().manual_seed(seed)
    tt = torch.tensor(t)
    x_t = torch.randn(3, *affine.sample_shape, generator=g, dtype=torch.float64)
    e = torch.randn(3, *affine.sample_shape, generator=g, dtype=torch.float64)
    x0 = affine(x_t, tt)
    nfe = affine.nfe
    d = cd.SecantNewton().direction(affine, x_t, tt, e, x0)
    assert affine.nfe == nfe + 1
    assert torch.allclose(d, cd.InexactNewton().direction(affine, x_t, tt, e, x0), atol=1e-12)


@settings(max_examples=10)
@given(seed=SEEDS, n=st.integers(2, 4), mode=st.sampled_from(["jvp", "inverse"]), keep=st.booleans())
def test_batch_of_n_equals_n_runs_of_one_direct(skewed, seed, n, mode, keep):
    """Per-sample histories: samples that stop moving (or have e = 0) do not disturb the others."""
    g = torch.Generator().manual_seed(seed)
    shape = skewed.sample_shape
    times = [torch.tensor(700), torch.tensor(700), torch.tensor(700), torch.tensor(300), torch.tensor(300)]
    xs = [torch.randn(n, *shape, generator=g, dtype=torch.float64) for _ in times]
    es = [torch.randn(n, *shape, generator=g, dtype=torch.float64) for _ in times]
    xs[2][0] = xs[1][0]  # sample 0 does not move between calls 1 and 2
    es[1][n - 1] = 0.0  # the last sample has no error at call 1
    batched = cd.SecantNewton(mode=mode, tol=0.3, keep_previous=keep, memory=3)
    singles = [cd.SecantNewton(mode=mode, tol=0.3, keep_previous=keep, memory=3) for _ in range(n)]
    for t, x, e in zip(times, xs, es):
        d = batched.direction(skewed, x, t, e, skewed(x, t))
        for i, solver in enumerate(singles):
            one = solver.direction(skewed, x[i : i + 1], t, e[i : i + 1], skewed(x[i : i + 1], t))
            assert torch.allclose(d[i : i + 1], one, atol=1e-9, rtol=1e-9)
            assert bool(batched.last_info.finite_difference[i] == solver.last_info.finite_difference[0])


def test_a_new_time_starts_a_new_history_unless_keep_previous(skewed):
    g = torch.Generator().manual_seed(0)
    x = [torch.randn(1, *skewed.sample_shape, generator=g, dtype=torch.float64) for _ in range(4)]
    e = torch.randn(1, *skewed.sample_shape, generator=g, dtype=torch.float64)
    for keep in (False, True):
        solver = cd.SecantNewton(tol=1.0, keep_previous=keep, memory=2)
        for xi in x[:3]:  # t = 500: FD pair + 2 secant pairs, ring of 2
            solver.direction(skewed, xi, torch.tensor(500), e, skewed(xi, torch.tensor(500)))
        assert int(solver.last_info.pairs[0]) == 2
        solver.direction(skewed, x[3], torch.tensor(400), e, skewed(x[3], torch.tensor(400)))
        # without keep_previous the new step starts empty and pays an FD; with it, 2 old pairs are reused
        assert int(solver.last_info.pairs[0]) == (2 if keep else 1)
        assert bool(solver.last_info.finite_difference[0]) is (not keep)
        solver.reset()
        assert solver.calls == 0 and solver.last_info is None


def test_one_instance_serves_many_runs(gaussian):
    truth = gaussian.sample_prior(1, torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., :4] = 1
    sampler = cd.ConstrainedSampler(gaussian, cd.SecantNewton(), steps=6, inner_steps=3)
    a = sampler.sample(cd.Inpainting(truth, mask), generator=torch.Generator().manual_seed(1), progress=False)
    b = sampler.sample(cd.Inpainting(truth, mask), generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a.sample, b.sample) and a.nfe == b.nfe


# --- options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("option,value", [("tol", 1.5), ("tol", -0.1), ("memory", 0), ("mode", "newton"),
                                          ("initial", "one"), ("rcond", 1.0), ("h", 0.0), ("keep_previous", "maybe"),
                                          ("unknown", 1)])
def test_invalid_options_are_rejected_naming_them(option, value):
    with pytest.raises(ValidationError, match=option):
        cd.SecantNewton(**{option: value})


def test_registry_config_and_direction_kind(gaussian32):
    solver = cd.solvers.get("secant-newton", mode="inverse", tol=0.2)
    assert isinstance(solver, cd.SecantNewton) and solver.direction_kind == "inverse" and solver.tol == 0.2
    assert cd.SecantNewton().direction_kind == "jvp"
    with pytest.raises(ValueError, match="arnoldi"):
        cd.ConstrainedSampler(gaussian32, solver, step_rule="arnoldi")


def test_shapes_that_differ_are_rejected(gaussian):
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="one shape"):
        cd.SecantNewton().direction(gaussian, x, torch.tensor(10), torch.zeros(1, 1, 4, 4, dtype=torch.float64), x)


# --- the targets on a small case -------------------------------------------------------------------------
def test_secant_costs_at_most_three_quarters_of_inexact_newton_and_cuts_the_residual_tenfold(skewed):
    """Non-symmetric analytic denoiser (1x8x8, float64), box-like inpainting, 10 steps x 5 inner steps.

    The MNIST DDPM and flow are measured by ``constrained-diffusion analyze secant`` (docs/secant.md).
    """
    truth = skewed.sample_prior(2, torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., :4] = 1
    constraint = cd.Inpainting(truth, mask)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(solver, inner):
        return cd.ConstrainedSampler(skewed, solver, steps=10, inner_steps=inner).sample(constraint, x_T=x_T, progress=False)

    free, newton, secant = run("identity", 0), run("inexact-newton", 5), run(cd.SecantNewton(), 5)
    assert newton.nfe == 10 * 11
    assert secant.nfe <= 0.75 * newton.nfe, (secant.nfe, newton.nfe)
    assert bool((secant.final_residual <= 0.1 * free.final_residual).all()), (secant.final_residual, free.final_residual)
    assert bool((secant.final_residual <= 1.5 * newton.final_residual).all())  # and about as close as inexact Newton


# --- the study's bookkeeping (no model run: every record is already in the store) -------------------------
def test_study_resumes_from_its_store_and_summarises_paired_differences(tmp_path):
    from constrained_diffusion.analysis.secant import KEY_FIELDS, equal_nfe_steps, secant_rows, secant_table
    from constrained_diffusion.utils.jsonl_store import JsonlStore

    store = JsonlStore(tmp_path / "s.jsonl", KEY_FIELDS)
    base = {"model": "ddpm", "task": "box", "digits": 2, "steps": 4, "inner_steps": 2, "seed": 0}
    nfe = {"unconstrained": 4, "secant-newton": 14, "inexact-newton": 20, "exact-newton": 36, "identity": 12}
    psnr = {"unconstrained": 10.0, "secant-newton": 16.0, "inexact-newton": 15.0, "exact-newton": 14.0, "identity": 13.0}
    for method in nfe:
        for regime in ("equal steps", "equal NFE"):
            if regime == "equal NFE" and method in ("unconstrained", "secant-newton"):
                continue
            steps = 4 if regime == "equal steps" else equal_nfe_steps(method, nfe["secant-newton"], 2)
            store.append({**base, "method": method, "regime": regime, "run_steps": steps, "nfe": nfe[method], "seconds": 1.0,
                          "psnr": [psnr[method], psnr[method] + 1], "ssim": [0.5, 0.7], "correct": [True, False],
                          "residual": [1.0, 2.0] if method != "unconstrained" else [20.0, 40.0],
                          **({"fd_fraction": 0.25} if method == "secant-newton" else {})})
    # records written before 0.2 (no task_names; 'box' was the top half) serve the task under its new name
    rows = secant_rows(["ddpm"], ["top-half"], digits=2, steps=4, inner_steps=2, results=tmp_path / "s.jsonl")
    assert {r.task for r in rows} == {"top-half"}
    assert [(r.regime, r.method) for r in rows][:4] == [("equal steps", m) for m in
                                                         ("secant-newton", "inexact-newton", "exact-newton", "identity")]
    inexact = next(r for r in rows if r.method == "inexact-newton" and r.regime == "equal NFE")
    assert inexact.steps == 2 and inexact.psnr_vs_secant == (-1.0, 0.0)
    secant = rows[0]
    assert secant.residual_cut == 20.0 and secant.accuracy == 0.5 and secant.fd_fraction == 0.25
    table = secant_table(rows)
    assert "| 0.70 " in table and "(FD 25%)" in table and "20.0x" in table
