"""The adaptive stop of an inner loop: a policy that ends a sample's iterations early.

Per sample, within one denoising step, with ``r_k`` the residual of the ``k``-th iterate:

* ``residual_tol``: stop once the best residual so far is ``<= residual_tol`` (``0``: never);
* ``min_decrease``: stop once an inner step reduced the best residual by less than this
  fraction, ``r_k >= (1 - min_decrease) r_best`` (``None``: never).

A stopped sample is frozen (its step factor is zero); the step keeps each sample's
lowest-residual iterate, and the residual table records the kept iterate's residual. The loop
ends once every sample has stopped.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.linalg.reductions import per_sample


class AdaptiveStopConfig(BaseModel):
    """Options of `AdaptiveStop`."""

    model_config = ConfigDict(extra="forbid")
    residual_tol: float = Field(0.0, ge=0.0)
    min_decrease: float | None = Field(None, ge=0.0, le=1.0)


class AdaptiveStop(Configurable):
    """Stop a sample's inner iterations at a residual tolerance or when progress stalls.

    Attributes:
        residual_tol: stop at ``best residual <= residual_tol`` (``>= 0``).
        min_decrease: stop when a step gains less than this fraction (``[0, 1]`` or ``None``).

    Example:
        >>> stop = AdaptiveStop(residual_tol=0.5).start()
        >>> x = torch.zeros(2, 1)
        >>> stop.observe(x, x, torch.tensor([1.0, 0.25])).tolist(), stop.done
        ([1.0, 0.25], False)
        >>> stop.freeze(torch.ones(2, 1)).flatten().tolist()
        [1.0, 0.0]
    """

    Config: ClassVar[type[BaseModel]] = AdaptiveStopConfig
    residual_tol: float
    min_decrease: float | None

    def start(self) -> AdaptiveRun:
        """A fresh per-step state."""
        return AdaptiveRun(self.residual_tol, self.min_decrease)


class AdaptiveRun:
    """The state of `AdaptiveStop` within one denoising step."""

    def __init__(self, residual_tol: float, min_decrease: float | None) -> None:
        self.residual_tol, self.min_decrease = residual_tol, min_decrease
        self.best: tuple[Tensor, Tensor, Tensor] | None = None
        self.stopped: Tensor | None = None

    def observe(self, x_t: Tensor, x0: Tensor, residual: Tensor) -> Tensor:
        """Record iterate ``(x_t, x0)`` with ``(B,)`` ``residual``; returns the kept residuals."""
        x_t, x0 = x_t.detach(), x0.detach()
        if self.best is None:
            self.best = (x_t, x0, residual)
            self.stopped = torch.zeros_like(residual, dtype=torch.bool)
        else:
            assert self.stopped is not None
            bx, b0, prev = self.best
            better = residual < prev
            if self.min_decrease is not None:  # not enough progress in this inner step
                self.stopped |= ~(residual < prev * (1.0 - self.min_decrease))
            keep = per_sample(better.to(x_t.device), x_t.ndim)
            self.best = (torch.where(keep, x_t, bx), torch.where(keep, x0, b0), torch.where(better, residual, prev))
        self.stopped |= self.best[2] <= self.residual_tol
        return self.best[2]

    @property
    def done(self) -> bool:
        """Whether every sample has stopped (one host synchronisation)."""
        return self.stopped is not None and bool(self.stopped.all())

    def freeze(self, s: Tensor) -> Tensor:
        """The step factors ``s`` ``(B, 1, ..., 1)`` with the stopped samples' set to zero."""
        if self.stopped is None:
            return s
        return torch.where(per_sample(self.stopped.to(s.device), s.ndim), torch.zeros_like(s), s)

    def kept(self) -> tuple[Tensor, Tensor]:
        """``(x_t, x0)``: each sample's lowest-residual iterate."""
        if self.best is None:
            raise RuntimeError("no iterate was observed")
        return self.best[0], self.best[1]
