"""Emulate TF32 convolutions on any device, to see whether a result depends on them.

On NVIDIA GPUs since Ampere, PyTorch runs float32 convolutions on tensor cores in TF32 by
default (``torch.backends.cudnn.allow_tf32 = True``; float32 matrix products are *not* TF32 by
default). TF32 keeps float32's 8-bit exponent but only 10 bits of mantissa: each convolution
rounds its input and its weight to ``x (1 + delta)`` with ``|delta| <= 2^-11`` and then
accumulates in float32. For most sampling this is harmless; for a finite difference

    J v ~= (D(x + h' v) - D(x)) / h',

whose numerator is a small difference of two large outputs, a relative rounding error of
``2^-11`` in every layer can be a sizeable fraction of the signal. `emulate_tf32` reproduces
that rounding on a CPU (or on a GPU with TF32 off), so a CPU run can tell whether a GPU result
differs from the CPU's because of TF32.

The emulation rounds to nearest, ties to even, in the 13 dropped mantissa bits; cuDNN's own
conversion may round differently in the last bit, so the emulation reproduces the size of the
error, not its exact bits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn

_DROPPED_BITS = 13  # float32 has 23 mantissa bits, TF32 keeps 10


def round_to_tf32(x: Tensor) -> Tensor:
    """``x`` (float32, any shape) rounded to TF32 precision (10 mantissa bits), as float32.

    Round to nearest, ties to even; the relative error is at most ``2^-11`` for normal
    numbers (subnormals keep 10 bits of their shorter mantissa, a larger relative error).
    Infinities and NaNs are returned unchanged.

    Raises:
        TypeError: ``x`` is not float32.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"round_to_tf32 expects a float32 tensor, got {x.dtype}")
    bits = x.contiguous().view(torch.int32)
    half = (1 << (_DROPPED_BITS - 1)) - 1
    odd = (bits >> _DROPPED_BITS) & 1
    rounded = ((bits + half + odd) & ~((1 << _DROPPED_BITS) - 1)).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded, x)


@contextmanager
def emulate_tf32(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every ``nn.Conv1d/2d/3d`` of ``module`` computes as a TF32 convolution.

    The weights are rounded in place on entry and restored exactly on exit; a forward
    pre-hook rounds each convolution's input. Only float32 convolutions are affected (the
    layers that cuDNN runs in TF32 by default); linear layers and matrix products are left in
    float32, as on a GPU with PyTorch's defaults.

    Examples:
        >>> conv = nn.Conv2d(1, 1, 3)
        >>> before = conv.weight.detach().clone()
        >>> with emulate_tf32(conv):
        ...     bool(torch.equal(conv.weight, round_to_tf32(before)))
        True
        >>> bool(torch.equal(conv.weight, before))  # restored exactly
        True
    """
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    saved: list[tuple[Tensor, Tensor]] = []
    handles = []

    def round_input(_: nn.Module, args: tuple) -> tuple:
        return tuple(round_to_tf32(a) if isinstance(a, Tensor) and a.dtype == torch.float32 else a for a in args)

    try:
        with torch.no_grad():
            for conv in convs:
                if conv.weight.dtype == torch.float32:
                    saved.append((conv.weight, conv.weight.detach().clone()))
                    conv.weight.copy_(round_to_tf32(conv.weight))
                    handles.append(conv.register_forward_pre_hook(round_input))
        yield module
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for weight, original in saved:
                weight.copy_(original)


@contextmanager
def tf32_disabled() -> Iterator[None]:
    """Within the block, CUDA float32 convolutions and matrix products run in full float32.

    Sets ``torch.backends.cudnn.allow_tf32`` and ``torch.backends.cuda.matmul.allow_tf32`` to
    ``False`` and restores both on exit. A no-op for CPU computations, which never use TF32.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


PRECISIONS: tuple[str, ...] = ("float32", "tf32-emulated", "no-tf32")
"""The float32 arithmetics a run can ask for (`precision_context`)."""


@contextmanager
def precision_context(modules: Iterable[nn.Module], precision: str) -> Iterator[None]:
    """Run the block in ``precision``, one of `PRECISIONS`.

    * ``"float32"``: the device's default float32 arithmetic (TF32 convolutions on recent NVIDIA GPUs);
    * ``"tf32-emulated"``: every convolution of each module rounds as TF32 does (`emulate_tf32`), on any device;
    * ``"no-tf32"``: TF32 off for CUDA convolutions and matrix products (`tf32_disabled`).

    Raises:
        ValueError: an unknown ``precision``.

    Examples:
        >>> conv = nn.Conv2d(1, 1, 3)
        >>> with precision_context([conv], "float32"):
        ...     pass
        >>> with precision_context([conv], "fp8"):
        ...     pass
        Traceback (most recent call last):
        ...
        ValueError: precision must be one of ('float32', 'tf32-emulated', 'no-tf32'), got 'fp8'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    with ExitStack() as stack:
        if precision == "tf32-emulated":
            for module in modules:
                stack.enter_context(emulate_tf32(module))
        if precision == "no-tf32":
            stack.enter_context(tf32_disabled())
        yield


__all__ = ["PRECISIONS", "emulate_tf32", "precision_context", "round_to_tf32", "tf32_disabled"]
