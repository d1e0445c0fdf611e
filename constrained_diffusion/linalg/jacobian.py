"""The dense Jacobian of a batched function, row by row with reverse-mode AD.

For ``f: (n, *shape) -> (n, *shape)`` that treats batch elements independently (as any
eval-mode network does; a denoiser's ``x_t -> x0_hat``) and a point ``x`` ``(1, *shape)``,

    J[i, j] = d f(x)_i / d x_j,        shape (D, D),  D = prod(shape),

row ``i`` is the vector-Jacobian product with the unit vector ``u_i``. `dense_jacobian` takes
``chunk`` rows per backward pass by replicating ``x`` along the batch dimension. The exact
Newton direction's ``"lstsq"`` method and the Jacobian analysis
(`constrained_diffusion.analysis.jacobian.jacobian`) both call it; there is no other copy.

Examples:
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    >>> dense_jacobian(lambda x: x @ A.T, torch.zeros(1, 2, dtype=torch.float64), chunk=1).tolist()
    [[2.0, 1.0], [0.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["dense_jacobian"]


def dense_jacobian(f: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 64,
                   on_backward: Callable[[], object] | None = None) -> Tensor:
    """The full Jacobian of ``f`` at one point ``x`` ``(1, *shape)``.

    Args:
        f: the batched function ``(n, *shape) -> (n, *shape)``; batch elements independent.
        x: the point, ``(1, *shape)``.
        chunk: rows per backward pass (``f`` is called on ``chunk`` copies of ``x``).
        on_backward: called after each backward pass (a denoiser counts them: ``count_backward``).

    Returns:
        ``(D, D)`` float64 tensor on the CPU.
    """
    x = x.detach()
    shape = tuple(x.shape[1:])
    D = x.numel()
    rows = []
    for start in range(0, D, chunk):
        n = min(chunk, D - start)
        with torch.enable_grad():
            leaf = x.expand(n, *shape).clone().requires_grad_(True)
            out = f(leaf).reshape(n, -1)
            unit = torch.zeros_like(out)
            unit[torch.arange(n), torch.arange(start, start + n)] = 1.0
            (g,) = torch.autograd.grad(out, leaf, unit)
        if on_backward is not None:
            on_backward()
        rows.append(g.reshape(n, D).double().cpu())
    return torch.cat(rows)
