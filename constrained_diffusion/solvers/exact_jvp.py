"""Exact Jacobian-vector product ``d = J e`` by automatic differentiation.

Two ways to the same number:

* ``"forward"`` — forward-mode AD: one forward pass with dual numbers carries ``(x0, J e)``
  together (about 2-3 times the cost of a plain forward; no activation memory for a backward).
  Fused attention kernels (PyTorch's ``scaled_dot_product_attention`` on CPU, flash attention
  on GPU) have no forward-AD rule, so the pass runs with the math SDPA backend; and PyTorch's
  forward-AD formula of ``group_norm`` fails on non-contiguous inputs (diffusers' attention
  blocks return channels-last strides), so group-norm inputs are made contiguous during the
  pass (`forward_ad_compatible`). If some other operation of the network still fails in
  forward mode, the solver falls back to double-backward and warns once.
* ``"double-backward"`` — the transpose trick: ``g(u) = J^T u`` is linear in ``u``, so
  ``J e = d<g(u), e>/du``. It reuses the sampler's forward (which keeps a graph, built with
  math attention because fused attention backwards are not differentiable) and costs two
  backward passes, the first with ``create_graph=True``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.precision import HALF_DTYPES
from constrained_diffusion.linalg.reductions import max_abs, safe_ratio
from constrained_diffusion.solvers.base import Solver, SolverConfig, vjp_through
from constrained_diffusion.solvers.registry import register

Method = Literal["forward", "double-backward"]


class ExactJVPConfig(SolverConfig):
    """Options of `ExactJVP`."""

    name: Literal["exact-jvp"] = "exact-jvp"
    method: Method = "forward"


def math_attention() -> AbstractContextManager[None]:
    """Route ``scaled_dot_product_attention`` to its math backend (differentiable in every mode)."""
    return sdpa_kernel([SDPBackend.MATH])


@contextlib.contextmanager
def forward_ad_compatible() -> Iterator[None]:
    """Run common network layers in a way forward-mode AD supports.

    * attention through the math SDPA backend (fused kernels have no forward-AD rule);
    * ``F.group_norm`` on a contiguous copy of its input (its forward-AD formula uses ``view``).

    The patch of ``torch.nn.functional.group_norm`` is undone on exit; it is not thread-safe.
    """
    original = F.group_norm

    def group_norm(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return original(input.contiguous(), *args, **kwargs)

    F.group_norm = group_norm  # type: ignore[assignment]
    try:
        with math_attention():
            yield
    finally:
        F.group_norm = original  # type: ignore[assignment]


def forward_jvp(denoiser: Denoiser, x_t: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """``(D(x_t, t), J v)`` by forward-mode AD (see `forward_ad_compatible`). Counts one NFE.

    The dual pass is dtype-safe: ``fwAD.make_dual`` does not cast the tangent to the primal's
    dtype, so a float32 ``v`` (constraint errors are computed in float32, `linalg.upcast`) on a
    float16/bfloat16 state made the network's first convolution or linear layer fail ("expected
    mat1 and mat2 to have the same dtype, float != Half" on CUDA, "expected scalar type Float but
    found Half" on CPU). The tangent therefore enters in the primal's dtype; for a float16/bfloat16
    state it is normalised per sample to max-norm 1 so that half precision neither overflows nor
    underflows, and the product is scaled back in ``v``'s dtype: ``J v = ||v||_inf J (v / ||v||_inf)``.

    Args:
        denoiser: the model, ``D``.
        x_t: the state, ``(B, *sample_shape)``, in the dtype the denoiser takes.
        t: the time.
        v: the direction, shape of ``x_t``, any floating dtype.

    Returns:
        ``(x0, J v)``: ``x0`` in the denoiser's output dtype, ``J v`` in ``v``'s dtype.
    """
    half = x_t.dtype in HALF_DTYPES
    scale = max_abs(v) if half else torch.ones((), dtype=v.dtype, device=v.device)
    unit = (safe_ratio(v.detach(), scale) if half else v.detach()).to(x_t.dtype)
    with torch.no_grad(), fwAD.dual_level(), forward_ad_compatible():
        out = denoiser(fwAD.make_dual(x_t.detach(), unit), t)
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:  # the output does not depend on x_t
        return primal, torch.zeros(primal.shape, dtype=v.dtype, device=primal.device)
    if not half:
        return primal, tangent.to(v.dtype)
    return primal, tangent.to(v.dtype) * scale.reshape(-1, *([1] * (tangent.ndim - 1))).to(v.dtype)


def double_backward_jvp(denoiser: Denoiser, x0: Tensor, x_t: Tensor, v: Tensor) -> Tensor:
    """``J v`` from a graph ``x0 = D(x_t)`` by differentiating ``J^T u`` with respect to ``u``."""
    with torch.enable_grad():
        u = torch.zeros_like(x0, requires_grad=True)
        g = vjp_through(denoiser, x0, x_t, u, create_graph=True)
        denoiser.count_backward()
        (jv,) = torch.autograd.grad(g, u, v)
    return jv.detach()


@register
class ExactJVP(Solver):
    """``d = J e`` exactly, by forward-mode AD or by double backward.

    Attributes:
        method: ``"forward"`` (default) or ``"double-backward"``.

    Examples:
        >>> ExactJVP("double-backward").requires_graph
        True
    """

    name = "exact-jvp"
    direction_kind = "jvp"
    Config = ExactJVPConfig
    method: Method

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.requires_graph = self.method == "double-backward"
        self._warned = False

    def evaluation_context(self) -> AbstractContextManager[None]:
        return math_attention() if self.requires_graph else contextlib.nullcontext()

    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        if self.method == "double-backward":
            return double_backward_jvp(denoiser, x0, x_t, e)
        try:
            return forward_jvp(denoiser, x_t, t, e)[1]
        except (NotImplementedError, RuntimeError) as exc:
            if not self._warned:
                warnings.warn(f"forward-mode AD failed ({str(exc).splitlines()[0]}); using double-backward", stacklevel=2)
                self._warned = True
            with torch.enable_grad(), math_attention():
                leaf = x_t.detach().requires_grad_(True)
                graph_x0 = denoiser(leaf, t)
            return double_backward_jvp(denoiser, graph_x0, leaf, e)
