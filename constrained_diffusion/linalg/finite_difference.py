r"""The finite-difference Jacobian-vector product with a max-norm step.

For a function ``f`` with Jacobian ``J`` at ``x`` (batched: sample ``i`` has its own ``J_i``)

    J v ~= (f(x + h' v) - f(x)) / h',        h' = h / ||v_i||_inf   (per sample),

so the perturbation ``h' v`` has max-norm exactly ``h`` whatever the scale of ``v``. A zero
``v_i`` gives ``J_i v_i = 0`` without dividing by zero. The error of the quotient is
``O(h |f''|)`` from truncation plus ``O(eps |f(x)| / h')`` from rounding in the arithmetic of
``f`` (unit roundoff ``eps``); the paper's ``h = 0.005`` is right for float32.

This is the one copy of the kernel: `InexactNewton`, `ExactNewton` (finite-difference GMRES),
the ``"arnoldi"`` step-size rule and `EncodedConstraint` ("VAE Newton") all call `fd_jvp`
(the Jacobian analysis uses forward-mode AD, `forward_jvp`, and takes no finite difference).

Precision-aware step (``h=None``, `default_h`): the total error of the quotient is about

    err(h) ~ h |f''| / 2  +  2 u |f| s / h,

with ``u`` the unit roundoff of the arithmetic that evaluates ``f`` and ``s`` the scale of the
state, minimised at ``h* ~ 2 sqrt(u |f| s / |f''|) ∝ sqrt(u)``. So

    h = max(H_PAPER, C_ROUNDING * sqrt(u) * s),     s = max(1, rms(x_i))   (per sample),

with ``H_PAPER = 0.005`` and ``C_ROUNDING = 5``: float32 (``u = 2^-24``, ``5 sqrt(u) = 0.0012``)
keeps exactly the paper's 0.005 (the scale is not applied in float32); float16 and TF32
(``u = 2^-11``) take 0.11 and bfloat16 (``u = 2^-8``) 0.31 on a unit-scale state.
``C_ROUNDING`` was fitted on tiny SD 1.x, SD3 and Flux pipelines (docs: Concepts,
"Finite differences and precision"; ``constrained-diffusion analyze fd-precision``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from constrained_diffusion.linalg.reductions import max_abs

H_PAPER = 0.005
"""The paper's max-norm step, kept exactly for float32 arithmetic: the floor of `default_h`."""
H_ENCODER = 0.01
"""The floor of "VAE Newton"'s step (`EncodedConstraint`): the max-norm of a perturbation of
pixels in ``[-1, 1]`` pushed through the VAE encoder, kept exactly in float32 (our choice)."""
C_ROUNDING = 5.0
"""``h = C_ROUNDING * sqrt(u) * scale`` balances rounding ``~u/h`` against truncation ``~h``."""


def tf32_active(device: torch.device | str) -> bool:
    """Whether float32 convolutions or matrix products on ``device`` run in TF32 (CUDA only)."""
    if torch.device(device).type != "cuda":
        return False
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def unit_roundoff(dtype: torch.dtype, tf32: bool = False) -> float:
    """Unit roundoff ``u`` of the arithmetic: ``eps / 2`` of ``dtype``, TF32's ``2^-11`` for float32 with TF32.

    Raises:
        TypeError: ``dtype`` is not a floating dtype.
    """
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    u = torch.finfo(dtype).eps / 2
    return max(u, 2.0**-11) if tf32 and dtype == torch.float32 else u


def default_h(dtype: torch.dtype, tf32: bool = False, scale: float | Tensor = 1.0, floor: float = H_PAPER) -> float | Tensor:
    """The precision-aware max-norm step ``max(floor, C_ROUNDING sqrt(u) scale)``.

    The one rule of every finite difference's default step: the denoiser's (`InexactNewton`,
    `ExactNewton`, the ``"arnoldi"`` step rule; ``floor=H_PAPER``) and the encoder's
    (`EncodedConstraint`; ``floor=H_ENCODER``).

    Args:
        dtype: dtype of the arithmetic that evaluates ``f`` (the model's).
        tf32: float32 convolutions/matrix products run in TF32 (10 mantissa bits).
        scale: scale of the state, ``max(1, rms(x))``; a float or a ``(B, 1, ..., 1)`` tensor.
            Ignored in full float32/float64, which keep exactly ``floor``.
        floor: the step in full float32/float64, and the smallest step in any precision.

    Returns:
        ``h``: a float, or a tensor of ``scale``'s shape.

    Examples:
        >>> default_h(torch.float32), round(default_h(torch.float16), 4), round(default_h(torch.bfloat16), 4)
        (0.005, 0.1105, 0.3125)
        >>> default_h(torch.float32, floor=H_ENCODER), round(default_h(torch.bfloat16, floor=H_ENCODER), 4)
        (0.01, 0.3125)
    """
    u = unit_roundoff(dtype, tf32)
    if u <= torch.finfo(torch.float32).eps / 2:
        return floor
    if isinstance(scale, Tensor):
        return (C_ROUNDING * u**0.5 * scale.clamp_min(1.0)).clamp_min(floor)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    return max(floor, C_ROUNDING * u**0.5 * max(1.0, float(scale)))


FLOOR_WARN_FACTOR = 20.0
"""A given ``h`` under ``FLOOR_WARN_FACTOR`` times `rounding_floor` is warned about: the quotient's rounding error ``2 u / h`` is over 10 %."""


def rounding_floor(dtype: torch.dtype, tf32: bool = False) -> float:
    """The smallest usable max-norm step: the unit roundoff ``u`` of the arithmetic, half a unit in the last place of 1.

    A perturbation of max-norm ``h`` below it is lost to rounding on a unit-scale state: ``x + h' v``
    rounds back to ``x`` on every entry with ``|x| >= 1`` (or the network's TF32/half-precision
    arithmetic rounds it away), so ``f(x + h' v) - f(x)`` is zero or rounding noise and ``J v`` is
    lost. Above it the quotient's relative rounding error is about ``2 u / h``: 200 % at the floor,
    10 % at ``FLOOR_WARN_FACTOR`` (20) times it.

    Examples:
        >>> rounding_floor(torch.float32), rounding_floor(torch.float32, tf32=True), rounding_floor(torch.bfloat16)
        (5.960464477539063e-08, 0.00048828125, 0.00390625)
    """
    return unit_roundoff(dtype, tf32)


def check_h(h: float | None, dtype: torch.dtype, device: torch.device | str | None = None, name: str = "h") -> None:
    """Refuse a given step ``h`` below `rounding_floor` of the arithmetic; warn below ``FLOOR_WARN_FACTOR`` times it.

    A check of two Python floats, no tensor and no host synchronisation: call it once per sampling
    run with the dtype the network actually computes in (``h=None`` is always fine).

    Args:
        h: the user's max-norm step, or ``None`` (precision-aware, nothing to check).
        dtype: dtype of the arithmetic of ``f`` (the model's).
        device: where ``f`` runs; float32 on a CUDA device with TF32 enabled has TF32's floor (`tf32_active`).
        name: the parameter's name in messages.

    Raises:
        ValueError: ``h < rounding_floor(dtype, tf32)``, naming ``name``, the dtype and the floor.

    Warns:
        UserWarning: ``h`` is under ``FLOOR_WARN_FACTOR`` times the floor, naming ``name``.

    Examples:
        >>> check_h(0.005, torch.float32)
        >>> check_h(1e-12, torch.float32)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: h=1e-12 is below the rounding floor 5.96e-08 of torch.float32 arithmetic: ... use h >= 5.96e-08 or h=None ...
    """
    if h is None:
        return
    tf32 = dtype == torch.float32 and device is not None and tf32_active(device)
    floor = rounding_floor(dtype, tf32)
    what = f"{dtype}{' with TF32' if tf32 else ''} arithmetic"
    if h < floor:
        raise ValueError(f"{name}={h:g} is below the rounding floor {floor:.3g} of {what}: the finite difference would be lost to "
                         f"rounding (zero or noise); use {name} >= {floor:.3g} or {name}=None (precision-aware, {float(default_h(dtype, tf32)):.3g} here)")
    if h < FLOOR_WARN_FACTOR * floor:
        import warnings

        warnings.warn(f"{name}={h:g} is within {FLOOR_WARN_FACTOR:g}x of the rounding floor {floor:.3g} of {what}: the finite difference "
                      f"carries about {200 * floor / h:.0f} % rounding error; {name}=None picks {float(default_h(dtype, tf32)):.3g}",
                      UserWarning, stacklevel=2)


def resolve_h(h: float | None, x: Tensor, dtype: torch.dtype | None = None) -> float | Tensor:
    """``h`` if given (checked ``> 0``), else `default_h` for ``dtype`` (default ``x.dtype``), TF32 and ``x``.

    The scale is the per-sample RMS of ``x``, shape ``(B, 1, ..., 1)``.

    Raises:
        ValueError: ``h`` is given and not ``> 0``.
    """
    if h is not None:
        if not h > 0:
            raise ValueError(f"h must be > 0, got {h!r}")
        return float(h)
    dtype = x.dtype if dtype is None else dtype
    tf32 = dtype == torch.float32 and tf32_active(x.device)
    if unit_roundoff(dtype, tf32) <= torch.finfo(torch.float32).eps / 2:
        return H_PAPER
    rms = x.detach().float().pow(2).flatten(1).mean(1).sqrt().reshape(-1, *([1] * (x.ndim - 1)))
    return default_h(dtype, tf32, rms)


def fd_step(v: Tensor, h: float | Tensor) -> tuple[Tensor, Tensor]:
    """``(h', active)``: the per-sample step ``h / ||v_i||_inf`` (0 where ``v_i = 0``) and ``v_i != 0``.

    ``h`` is a float or a per-sample ``(B, 1, ..., 1)`` tensor; both results have shape ``(B, 1, ..., 1)``.
    """
    scale = max_abs(v)
    active = scale > 0
    if isinstance(h, Tensor):
        h = h.to(scale.dtype).reshape(scale.shape)
    h_prime = torch.where(active, h / scale.clamp_min(torch.finfo(scale.dtype).tiny), torch.zeros_like(scale))
    return h_prime, active


@torch.no_grad()
def fd_jvp(f: Callable[[Tensor], Tensor], x: Tensor, v: Tensor, h: float | None = None, fx: Tensor | None = None,
           dtype: torch.dtype | None = None) -> Tensor:
    """``J v`` by a forward difference of ``f`` at ``x`` along ``v``, per sample.

    Args:
        f: the batched function, ``(B, *shape) -> (B, *out_shape)``.
        x: the point, ``(B, *shape)``.
        v: the direction, shape of ``x`` (any floating dtype; the result has ``v``'s dtype).
        h: max-norm of the perturbation ``h' v`` (``> 0``); ``None``: precision-aware,
            `default_h` of ``dtype``, TF32 and the per-sample scale of ``x`` (`resolve_h`).
        fx: ``f(x)`` if already evaluated (reused: one call of ``f``); when ``None`` the two
            points are evaluated in one batched call ``f(cat([x, x + h' v]))``.
        dtype: dtype of the arithmetic of ``f`` for ``h=None`` (the model's; default ``x.dtype``).

    Returns:
        ``J v``, shape ``(B, *out_shape)``, zero for the samples where ``v`` is zero.

    Examples:
        >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
        >>> f = lambda x: x @ A.T
        >>> v = torch.tensor([[1.0, -1.0], [0.0, 0.0]], dtype=torch.float64)
        >>> fd_jvp(f, torch.zeros(2, 2, dtype=torch.float64), v, h=1e-3).tolist()
        [[1.0, -3.0], [0.0, 0.0]]
        >>> fd_jvp(f, torch.zeros(2, 2, dtype=torch.float64), v).tolist()  # float64: h = 0.005
        [[1.0, -3.0], [0.0, 0.0]]
    """
    h = resolve_h(h, x, dtype)
    if tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"v has shape {tuple(v.shape)} but x has shape {tuple(x.shape)}")
    h_prime, active = fd_step(v, h)
    moved_in = (x + h_prime * v).to(x.dtype)
    if fx is None:
        fx, moved = f(torch.cat([x, moved_in])).chunk(2)
    else:
        moved = f(moved_in)
    out_active = active.reshape(-1, *([1] * (moved.ndim - 1)))
    denom = torch.where(out_active, h_prime.reshape(out_active.shape), torch.ones_like(h_prime.reshape(out_active.shape)))
    jv = (moved - fx).to(v.dtype) / denom
    return torch.where(out_active, jv, torch.zeros_like(jv))
