"""ExactJVP on networks whose attention uses PyTorch's fused SDPA kernel (no forward-AD rule)."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import constrained_diffusion as cd

# every registered solver runs; exact Newton with a 3-dimensional Krylov space keeps it cheap
CHEAP = {"exact-newton": {"name": "exact-newton", "iterations": 3}}
from constrained_diffusion.models import UNet

diffusers = pytest.importorskip("diffusers")


def _tiny_diffusers_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval().requires_grad_(False)


NETWORKS = {
    "diffusers-UNet2DModel": (_tiny_diffusers_unet, (3, 16, 16)),
    "package-UNet": (lambda: UNet(base_channels=16, sample_size=16, attention_resolutions=(8,)).eval().requires_grad_(False), (1, 16, 16)),
}


@pytest.fixture(params=list(NETWORKS), scope="module")
def net_denoiser(request) -> cd.NetworkDenoiser:
    make, shape = NETWORKS[request.param]
    torch.manual_seed(0)
    return cd.NetworkDenoiser(make(), cd.VPSchedule.linear(), shape, prediction="epsilon")


def _problem(model: cd.NetworkDenoiser, t: int = 500):
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, *model.sample_shape, generator=g)
    e = torch.randn(2, *model.sample_shape, generator=g)
    tt = torch.tensor(t)
    with torch.no_grad():
        x0 = model(x_t, tt)
    return x_t, tt, e, x0


def test_fused_attention_has_no_forward_ad_rule(net_denoiser):
    """The reason for the fallback: plain forward AD through the fused kernel fails on CPU."""
    x_t, tt, e, _ = _problem(net_denoiser)
    with pytest.raises(NotImplementedError):
        with fwAD.dual_level():
            net_denoiser(fwAD.make_dual(x_t, e), tt)


@pytest.mark.parametrize("method", ["forward", "double-backward"])
def test_exact_jvp_agrees_with_inexact_newton(net_denoiser, method):
    x_t, tt, e, x0 = _problem(net_denoiser)
    d_fd = cd.InexactNewton().direction(net_denoiser, x_t, tt, e, x0)
    solver = cd.ExactJVP(method)
    leaf = x_t.clone().requires_grad_(True)
    with torch.enable_grad(), solver.evaluation_context():
        x0_graph = net_denoiser(leaf, tt) if method == "double-backward" else x0
    d_ad = solver.direction(net_denoiser, leaf if method == "double-backward" else x_t, tt, e, x0_graph)
    rel = (d_ad - d_fd).flatten(1).norm(dim=1) / d_ad.flatten(1).norm(dim=1)
    assert float(rel.max()) < 1e-2


def test_no_fallback_warning_on_supported_networks(net_denoiser, recwarn):
    """Forward mode runs natively (no silent fallback to double-backward) on both networks."""
    x_t, tt, e, _ = _problem(net_denoiser)
    cd.ExactJVP("forward").direction(net_denoiser, x_t, tt, e, None)  # type: ignore[arg-type]
    assert not [w for w in recwarn if "double-backward" in str(w.message)]


def test_forward_and_double_backward_agree(net_denoiser):
    x_t, tt, e, _ = _problem(net_denoiser)
    d_fwd = cd.ExactJVP("forward").direction(net_denoiser, x_t, tt, e, None)  # type: ignore[arg-type]
    solver = cd.ExactJVP("double-backward")
    leaf = x_t.clone().requires_grad_(True)
    with torch.enable_grad(), solver.evaluation_context():
        x0_graph = net_denoiser(leaf, tt)
    d_dbl = solver.direction(net_denoiser, leaf, tt, e, x0_graph)
    assert torch.allclose(d_fwd, d_dbl, rtol=1e-4, atol=1e-4 * float(d_fwd.abs().max()))


def test_sampling_with_each_solver_on_a_network(net_denoiser):
    x_t, _, _, _ = _problem(net_denoiser)
    y = torch.zeros(1, *net_denoiser.sample_shape)
    mask = torch.zeros(1, 1, *net_denoiser.sample_shape[1:])
    mask[..., :8] = 1
    constraint = cd.Inpainting(y, mask)
    base = cd.ConstrainedSampler(net_denoiser, "inexact-newton", steps=3, inner_steps=0).sample(constraint, x_T=x_t, progress=False)
    for solver in cd.solvers.names():
        r = cd.ConstrainedSampler(net_denoiser, CHEAP.get(solver, solver), steps=3, inner_steps=3).sample(constraint, x_T=x_t, progress=False)
        assert torch.isfinite(r.sample).all()
        assert bool((r.final_residual < base.final_residual).all()), solver
