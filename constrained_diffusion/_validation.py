"""Early input checks that raise errors naming the offending parameter."""

from __future__ import annotations

from torch import Tensor


def check_tensor(name: str, value: object, min_ndim: int = 1) -> Tensor:
    """Require a floating tensor with at least ``min_ndim`` dimensions and only finite values."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions (batch first), got shape {tuple(value.shape)}")
    if not bool(value.isfinite().all()):
        bad = int((~value.isfinite()).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return value


def check_unit_interval(name: str, value: Tensor) -> None:
    """Require every element of ``value`` to lie in ``[0, 1]``."""
    lo, hi = float(value.min()), float(value.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def check_sample_shape(name: str, value: Tensor, sample_shape: tuple[int, ...]) -> None:
    """Require ``value`` to be ``(B, *sample_shape)``, allowing size-1 (broadcast) dimensions."""
    expected = (len(sample_shape) + 1)
    ok = value.ndim == expected and all(v in (1, s) for v, s in zip(value.shape[1:], sample_shape))
    if not ok:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but the denoiser's samples have shape "
            f"(B, {', '.join(map(str, sample_shape))})"
        )
