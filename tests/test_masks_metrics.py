"""Mask generators and metrics."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from constrained_diffusion.constraints.masks import box_mask, free_form_mask, random_box_mask
from constrained_diffusion.metrics import PeakMemory, frechet_distance, psnr, ssim


@given(ratio=st.floats(0.1, 0.6), seed=st.integers(0, 10_000))
def test_free_form_hits_its_hole_ratio_and_is_seeded(ratio, seed):
    m = free_form_mask((32, 32), ratio, torch.Generator().manual_seed(seed))
    assert m.shape == (1, 1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs((1 - float(m.mean())) - ratio) <= 0.05
    assert torch.equal(m, free_form_mask((32, 32), ratio, torch.Generator().manual_seed(seed)))


@given(seed=st.integers(0, 10_000))
def test_random_box_covers_a_quarter(seed):
    m = random_box_mask((32, 32), 0.25, torch.Generator().manual_seed(seed))
    assert 1 - float(m.mean()) == pytest.approx(0.25)


def test_mask_arguments_are_checked():
    with pytest.raises(ValueError, match="hole_ratio"):
        free_form_mask((8, 8), 0.0)
    with pytest.raises(ValueError, match="outside the image"):
        box_mask((8, 8), 9, 0, 2, 2)
    with pytest.raises(ValueError, match="area"):
        random_box_mask((8, 8), 1.5)


def test_frechet_distance_of_shifted_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    b = torch.randn(20000, 4, generator=g, dtype=torch.float64) * 2 + 1
    # ||mu||^2 + tr(I + 4I - 2 * 2I) = 4 + 4
    assert frechet_distance(a, b) == pytest.approx(8.0, rel=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="features must be"):
        frechet_distance(a, b[:, :3])


def test_psnr_ssim():
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert torch.isinf(psnr(x, x)).all() or bool((psnr(x, x) > 100).all())
    noisy = (x + 0.1).clamp(-1, 1)
    assert bool((psnr(noisy, x) > 20).all()) and ssim(x, x).shape == (2,)
    assert bool((ssim(x, x) > 0.999).all()) and bool((ssim(-x, x) < -0.5).all())


def test_peak_memory_sees_an_allocation():
    with PeakMemory() as peak:
        t = torch.ones(40_000_000)  # 160 MB
        del t
    assert peak.megabytes > 100


def test_peak_memory_on_cpu_sees_a_repeated_block():
    """Freed heap memory is kept resident by glibc; the second and third blocks must still count."""

    def many_small() -> float:
        chunks = [torch.ones(256, 1024) for _ in range(150)]  # 150 MB in 1 MB pieces, below mmap size
        return float(sum(c[0, 0] for c in chunks))

    peaks = []
    for _ in range(3):
        with PeakMemory() as peak:
            many_small()
        peaks.append(peak.megabytes)
    assert all(p > 100 for p in peaks), peaks
