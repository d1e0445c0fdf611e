"""The solver role: turn an error in ``x0``-space into an update direction in ``x_t``-space.

Newton's method would take ``d = J^-1 e`` with ``J = d x0_hat / d x_t``; solvers provide cheap
stand-ins (see the Concepts page): ``J e`` by a finite difference (`InexactNewton`),
``J^T e`` by backpropagation (`GradientDescent`) and ``J e`` by forward-mode AD
(`ExactJVP`). The sampler normalises the direction (``d / max|d|`` per sample), so a
solver need not care about its scale.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import ClassVar, ContextManager

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser


class Solver(ABC):
    """Abstract solver.

    Attributes:
        name: registry name (``"inexact-newton"``, ...), used by configuration files.
        requires_graph: if true the sampler evaluates ``x0 = D(x_t, t)`` with an autograd
            graph from a leaf ``x_t`` and passes both, so the solver can reuse the forward.
    """

    name: ClassVar[str]
    requires_graph: bool = False

    def evaluation_context(self) -> ContextManager[None]:
        """Context in which the sampler evaluates the ``x0`` this solver reuses.

        The default does nothing; `ExactJVP` with
        ``"double-backward"`` builds its graph with math attention, whose backward is itself
        differentiable.
        """
        return contextlib.nullcontext()

    @abstractmethod
    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        """Update direction in ``x_t``-space, before normalisation.

        Args:
            denoiser: the model ``D``.
            x_t: current state, ``(B, *sample_shape)``; a leaf requiring grad when
                `requires_graph` is true.
            t: the current time (scalar tensor).
            e: error direction from the constraint, shape of ``x_t``.
            x0: ``D(x_t, t)``, already evaluated (with a graph iff `requires_graph`).

        Returns:
            ``d``, shape of ``x_t``, detached.
        """


def max_abs(x: Tensor) -> Tensor:
    """Per-sample ``max |x|`` broadcastable against ``x``: shape ``(B, 1, ..., 1)``."""
    return x.detach().flatten(1).abs().amax(dim=1).view(-1, *([1] * (x.ndim - 1)))


def vjp_through(denoiser: Denoiser, x0: Tensor, x_t: Tensor, v: Tensor, create_graph: bool = False) -> Tensor:
    """``J^T v`` from an existing graph ``x0 = D(x_t)``; counts one backward pass."""
    denoiser.count_backward()
    (g,) = torch.autograd.grad(x0, x_t, v, retain_graph=create_graph, create_graph=create_graph)
    return g
