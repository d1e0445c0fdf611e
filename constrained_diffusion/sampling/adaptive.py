"""The adaptive stop of an inner loop: a policy that ends a sample's iterations early.

Per sample, within one denoising step, with ``r_k`` the residual of the ``k``-th iterate:

* ``residual_tol``: stop once the best residual so far is ``<= residual_tol`` (``0``: never);
  ``"discrepancy"``: the tolerance is each sample's discrepancy level
  ``discrepancy_tau sigma_y sqrt(m)`` (`Constraint.discrepancy`), read from the constraint's
  ``noise_std`` when the step starts — Morozov's discrepancy principle: stop fitting once the
  residual is as small as the noise makes the truth's;
* ``min_decrease``: stop once an inner step reduced the best residual by less than this
  fraction, ``r_k >= (1 - min_decrease) r_best`` (``None``: never).

A stopped sample is frozen (its step factor is zero); the step keeps each sample's
lowest-residual iterate, and the residual table records the kept iterate's residual. The loop
ends once every sample has stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.linalg.reductions import per_sample

if TYPE_CHECKING:
    from constrained_diffusion.constraints.base import Constraint

ResidualTol = Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | Literal["discrepancy"]
"""A residual tolerance: a finite number ``>= 0`` or ``"discrepancy"``."""


def discrepancy_tolerance(constraint: Constraint | None, tau: float = 1.0) -> Tensor:
    """The per-sample tolerance of ``residual_tol="discrepancy"``: ``tau sigma_y sqrt(m)``, ``(1,)`` or ``(B,)``.

    Raises:
        ValueError: no constraint, or one without ``noise_std``; the message names
            ``residual_tol`` and the constraint's type.
    """
    if constraint is None:
        raise ValueError("residual_tol='discrepancy' needs a constraint with noise_std; got no constraint")
    try:
        return constraint.discrepancy(tau).detach().float()
    except ValueError as exc:
        raise ValueError(f"residual_tol='discrepancy' stops at the measurement noise's level, but the "
                         f"{type(constraint).__name__} given has none ({exc}); pass noise_std=... to the constraint, "
                         "or give residual_tol a number") from None


class AdaptiveStopConfig(BaseModel):
    """Options of `AdaptiveStop`."""

    model_config = ConfigDict(extra="forbid")
    residual_tol: ResidualTol = 0.0
    min_decrease: float | None = Field(None, ge=0.0, le=1.0)
    discrepancy_tau: float = Field(1.0, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _tau_needs_discrepancy(self) -> AdaptiveStopConfig:
        check_discrepancy_tau(self.residual_tol, self.discrepancy_tau)
        return self


def check_discrepancy_tau(residual_tol: float | str, discrepancy_tau: float) -> None:
    """``discrepancy_tau`` other than 1 means nothing unless ``residual_tol="discrepancy"``: a ValueError."""
    if discrepancy_tau != 1.0 and residual_tol != "discrepancy":
        raise ValueError(f"discrepancy_tau={discrepancy_tau} applies only with residual_tol='discrepancy' "
                         f"(got residual_tol={residual_tol!r})")


class AdaptiveStop(Configurable):
    """Stop a sample's inner iterations at a residual tolerance or when progress stalls.

    Attributes:
        residual_tol: stop at ``best residual <= residual_tol`` (``>= 0``), or ``"discrepancy"``:
            at ``best residual <= discrepancy_tau sigma_y sqrt(m)`` per sample (the constraint
            must have ``noise_std``).
        min_decrease: stop when a step gains less than this fraction (``[0, 1]`` or ``None``).
        discrepancy_tau: Morozov's factor ``tau > 0`` of the discrepancy level (default 1; only
            with ``residual_tol="discrepancy"``).

    Examples:
        >>> stop = AdaptiveStop(residual_tol=0.5).start()
        >>> x = torch.zeros(2, 1)
        >>> stop.observe(x, x, torch.tensor([1.0, 0.25])).tolist(), stop.done
        ([1.0, 0.25], False)
        >>> stop.freeze(torch.ones(2, 1)).flatten().tolist()
        [1.0, 0.0]

        The discrepancy level of each sample comes from its constraint's ``noise_std``:

        >>> import constrained_diffusion as cd
        >>> c = cd.Inpainting(torch.zeros(2, 1, 2, 2), torch.ones(1, 1, 2, 2), noise_std=torch.tensor([0.5, 0.1]))
        >>> run = AdaptiveStop(residual_tol="discrepancy").start(c)   # 0.5 * sqrt(4), 0.1 * sqrt(4)
        >>> levels = [round(v, 4) for v in run.residual_tol.tolist()]
        >>> levels
        [1.0, 0.2]
    """

    Config: ClassVar[type[BaseModel]] = AdaptiveStopConfig
    residual_tol: float | Literal["discrepancy"]
    min_decrease: float | None
    discrepancy_tau: float

    @property
    def discrepancy(self) -> bool:
        """Whether the tolerance is the constraint's discrepancy level."""
        return self.residual_tol == "discrepancy"

    def check(self, constraint: Constraint | None) -> None:
        """Check, before any network call, that ``constraint`` gives what this stop needs.

        Raises:
            ValueError: ``residual_tol="discrepancy"`` with a constraint that has no ``noise_std``.
        """
        if self.discrepancy:
            discrepancy_tolerance(constraint, self.discrepancy_tau)

    def tolerance(self, constraint: Constraint | None = None) -> float | Tensor:
        """The residual tolerance: the number given, or ``(B,)`` / ``(1,)`` discrepancy levels of ``constraint``."""
        if self.discrepancy:
            return discrepancy_tolerance(constraint, self.discrepancy_tau)
        return float(self.residual_tol)

    def start(self, constraint: Constraint | None = None) -> AdaptiveRun:
        """A fresh per-step state; ``constraint`` gives the discrepancy level (needed only then)."""
        return AdaptiveRun(self.tolerance(constraint), self.min_decrease)


class AdaptiveRun:
    """The state of `AdaptiveStop` within one denoising step.

    Args:
        residual_tol: a number, or per-sample tolerances ``(B,)`` (or ``(1,)``, shared).
        min_decrease: see `AdaptiveStop`.
    """

    def __init__(self, residual_tol: float | Tensor, min_decrease: float | None) -> None:
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
        tol = self.residual_tol
        if isinstance(tol, Tensor):
            tol = tol.to(self.best[2])
        self.stopped |= self.best[2] <= tol
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
