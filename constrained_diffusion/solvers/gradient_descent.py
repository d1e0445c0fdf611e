"""Gradient descent through the denoiser: ``d = J^T e`` (the DPS direction).

Chung et al., *Diffusion Posterior Sampling for General Noisy Inverse Problems*, ICLR 2023.
With ``e = -grad_{x0} L`` the vector-Jacobian product ``J^T e = -grad_{x_t} L(D(x_t))`` is the
gradient of the constraint loss with respect to ``x_t``: one forward with an autograd graph and
one backward through the network per inner step.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.solvers.base import Solver, SolverConfig, vjp_through
from constrained_diffusion.solvers.registry import register


class GradientDescentConfig(SolverConfig):
    """Options of `GradientDescent` (none)."""

    name: Literal["gradient-descent"] = "gradient-descent"


@register
class GradientDescent(Solver):
    """``d = J^T e`` by backpropagation, reusing the sampler's forward pass (which kept a graph).

    Examples:
        >>> GradientDescent()
        GradientDescent()
    """

    name = "gradient-descent"
    direction_kind = "vjp"
    Config = GradientDescentConfig
    requires_graph = True

    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        """``J^T e`` through the graph of ``x0 = D(x_t, t)`` (one backward pass)."""
        if not x0.requires_grad:
            raise RuntimeError("GradientDescent needs x0 = D(x_t, t) evaluated with an autograd graph from x_t")
        return vjp_through(denoiser, x0, x_t, e).detach()
