"""TF32 emulation: the rounding law, and convolutions computed on rounded operands."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from constrained_diffusion.utils.precision import emulate_tf32, round_to_tf32

_BOUND = float(torch.tensor(1e30, dtype=torch.float32))  # far below float32 max, so rounding never overflows
finite_floats = st.floats(min_value=-_BOUND, max_value=_BOUND, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite_floats, min_size=1, max_size=32))
def test_rounding_keeps_ten_mantissa_bits_and_a_relative_error_below_2_pow_minus_11(values):
    x = torch.tensor(values, dtype=torch.float32)
    r = round_to_tf32(x)
    assert torch.all((r.view(torch.int32) & 0x1FFF) == 0)  # the 13 dropped bits are zero
    assert torch.equal(round_to_tf32(r), r)  # idempotent
    nonzero = x != 0
    rel = ((r - x).abs()[nonzero].double() / x.abs()[nonzero].double())
    assert rel.numel() == 0 or float(rel.max()) <= 2.0 ** -11 * (1 + 1e-6)


def test_rounding_is_to_nearest_with_ties_to_even():
    u = 2.0 ** -10  # the TF32 spacing at 1
    x = torch.tensor([1.0, 1 + u, 1 + u / 2, 1 + 3 * u / 2, 1 + u / 4, -(1 + 3 * u / 2), float("inf"), float("nan")])
    r = round_to_tf32(x)
    assert r[:6].tolist() == [1.0, 1 + u, 1.0, 1 + 2 * u, 1.0, -(1 + 2 * u)]
    assert r[6] == float("inf") and torch.isnan(r[7])
    with pytest.raises(TypeError, match="float32"):
        round_to_tf32(torch.ones(2, dtype=torch.float64))


def test_emulated_convolution_uses_rounded_operands_and_restores_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(4, 2, 1))
    original = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        exact = net(x)
        with emulate_tf32(net):
            emulated = net(x)
            first = net[0]
            h = torch.nn.functional.conv2d(round_to_tf32(x), first.weight, first.bias, padding=1)
            assert torch.equal(first.weight, round_to_tf32(original[0]))
        # by hand: each convolution sees rounded input and weight (biases are added in float32)
        h = torch.nn.functional.silu(h)
        by_hand = torch.nn.functional.conv2d(round_to_tf32(h), round_to_tf32(original[2]), original[3])
    assert torch.equal(emulated, by_hand)
    assert not torch.equal(emulated, exact)
    assert float((emulated - exact).abs().max()) < 1e-2 * float(exact.abs().max())
    for p, o in zip(net.parameters(), original):
        assert torch.equal(p, o)  # restored bit for bit
    assert not net[0]._forward_pre_hooks  # hooks removed


def test_tf32_disabled_sets_and_restores_the_backend_flags():
    from constrained_diffusion.utils.precision import tf32_disabled

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with tf32_disabled():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError), tf32_disabled():
            raise RuntimeError("restored on error too")
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
