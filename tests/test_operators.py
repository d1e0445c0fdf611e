"""Linear operators: adjointness <A x, v> = <x, A^T v>, the error formula, and the bicubic kernel."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import constrained_diffusion as cd


class ColumnMean(cd.LinearConstraint):
    """A user operator that implements only ``forward``: the mean of each image column."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-2)


class RandomMatrix(cd.LinearConstraint):
    """A user operator with a dense random matrix; ``forward`` only."""

    def __init__(self, y: torch.Tensor, M: torch.Tensor) -> None:
        super().__init__(y)
        self.M = M

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.M.T.to(x)


def _mask(shape, g):
    return (torch.rand(1, 1, *shape[1:], generator=g, dtype=torch.float64) > 0.5).double()


# name -> (factory(sample_shape, generator) -> operator, sample_shape)
OPERATORS: dict[str, tuple[Callable[[tuple[int, ...], torch.Generator], cd.LinearConstraint], tuple[int, ...]]] = {
    "inpainting": (lambda s, g: cd.Inpainting(torch.zeros(1, *s, dtype=torch.float64), _mask(s, g)), (3, 8, 8)),
    "inpainting-soft": (lambda s, g: cd.Inpainting(torch.zeros(1, *s, dtype=torch.float64),
                                                   torch.rand(1, 1, *s[1:], generator=g, dtype=torch.float64)), (2, 6, 6)),
    "sr-bicubic-x2": (lambda s, g: cd.SuperResolution(torch.zeros(1, s[0], s[1] // 2, s[2] // 2, dtype=torch.float64), 2), (1, 8, 8)),
    "sr-bicubic-x4": (lambda s, g: cd.SuperResolution(torch.zeros(1, s[0], s[1] // 4, s[2] // 4, dtype=torch.float64), 4), (3, 16, 8)),
    "sr-bicubic-x8": (lambda s, g: cd.SuperResolution(torch.zeros(1, s[0], s[1] // 8, s[2] // 8, dtype=torch.float64), 8), (3, 32, 16)),
    "sr-box-x8": (lambda s, g: cd.SuperResolution(torch.zeros(1, s[0], s[1] // 8, s[2] // 8, dtype=torch.float64), 8, kernel="box"), (1, 16, 32)),
    "sr-box-x4": (lambda s, g: cd.SuperResolution(torch.zeros(1, s[0], s[1] // 4, s[2] // 4, dtype=torch.float64), 4, kernel="box"), (1, 16, 16)),
    "user-column-mean": (lambda s, g: ColumnMean(torch.zeros(1, s[0], s[2], dtype=torch.float64)), (2, 5, 7)),
    "user-random-matrix": (lambda s, g: RandomMatrix(torch.zeros(1, 10, dtype=torch.float64),
                                                     torch.randn(10, 3 * 4 * 4, generator=g, dtype=torch.float64)), (3, 4, 4)),
}


@pytest.mark.parametrize("name", list(OPERATORS))
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 3))
def test_adjointness(name, seed, batch):
    factory, shape = OPERATORS[name]
    g = torch.Generator().manual_seed(seed)
    op = factory(shape, g)
    op.validate(shape)
    x = torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    Ax = op.forward(x)
    v = torch.randn(Ax.shape, generator=g, dtype=torch.float64)
    lhs = (Ax * v).sum()
    rhs = (x * op.adjoint(v)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_error_is_adjoint_of_residual(name):
    factory, shape = OPERATORS[name]
    g = torch.Generator().manual_seed(0)
    op = factory(shape, g)
    op.y = torch.randn(op.y.shape, generator=g, dtype=torch.float64)
    op.validate(shape)
    x0 = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    e, r = op.error_and_residual(x0)
    r_vec = op.y - op.forward(x0)
    assert torch.allclose(e, op.adjoint(r_vec).expand_as(x0))
    assert torch.allclose(r, r_vec.flatten(1).norm(dim=1))
    # e is the negative gradient of 0.5 ||y - A x||^2
    x = x0.clone().requires_grad_(True)
    (g_,) = torch.autograd.grad(0.5 * ((op.y - op.forward(x)) ** 2).sum(), x)
    assert torch.allclose(e, -g_)


def test_inpainting_error_is_mask_times_difference():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 1, 6, 6, generator=g)
    mask = (torch.rand(2, 1, 6, 6, generator=g) > 0.5).float()
    x0 = torch.randn(2, 1, 6, 6, generator=g)
    e, r = cd.Inpainting(y, mask).error_and_residual(x0)
    assert torch.allclose(e, mask * (y - x0))
    assert torch.allclose(r, (mask * (y - x0)).flatten(1).norm(dim=1))


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_matches_torch_antialiased_interpolate(factor):
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    op = cd.SuperResolution(torch.zeros(1, 3, 32 // factor, 32 // factor, dtype=torch.float64), factor)
    ref = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(op.forward(x), ref, atol=1e-12)


def test_box_is_block_mean():
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    op = cd.SuperResolution(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 4, kernel="box")
    assert torch.allclose(op.forward(x), F.avg_pool2d(x, 4))


def test_default_adjoint_needs_input_shape():
    op = ColumnMean(torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="input_shape"):
        op.adjoint(torch.ones(1, 1, 4))
