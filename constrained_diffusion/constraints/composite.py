"""Constraints that add up: a weighted sum of constraints on the same ``x0_hat``.

For parts ``c_i`` with weights ``w_i >= 0`` (``c1 + c2``, ``w * c``, ``c * w`` or
``Composite([(c1, w1), (c2, w2)])``), every part sees the same ``x0_hat`` ``(B, *sample_shape)``:

* error: ``e = sum_i w_i e_i``, the negative gradient of the loss
  ``L = sum_i w_i L_i`` where ``L_i = 0.5 ||y_i - A_i x||^2`` for a `LinearConstraint`
  (whose error ``A_i^T (y_i - A_i x)`` is that gradient) and ``L_i = loss_i`` for a
  `NonlinearConstraint`;
* residual (combined): ``r = sum_i w_i r_i`` with ``r_i`` each part's own residual, i.e.
  ``||y_i - A_i x||_2`` (a norm, not squared) for a linear part and ``loss_i`` for a
  nonlinear one. It is ``>= 0``, zero exactly when every part with ``w_i > 0`` holds, and
  ``1 * c`` has the residual of ``c``. `Composite.residuals` reports each ``r_i`` unweighted.

The two differ on purpose: the error follows the loss (what the inner loop descends), the
residual reports the violations in each part's own units (what the adaptive stop and the
result tables read). For a composite of linear parts with noise levels, the discrepancy level
is ``sum_i w_i tau sigma_i sqrt(m_i)``: reached when every part is at its own level.

Sums flatten: ``(c1 + c2) + c3`` and ``c1 + (c2 + c3)`` have the same three parts, and
``w * (c1 + c2)`` has weights ``(w, w)``. Parts may live in different spaces of a latent model
as long as they all take the latent ``z0_hat``: e.g. `latent_inpainting` (latent space) plus a
`DecodedConstraint` (pixel space through the decoder).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real

import torch
from torch import Tensor

from constrained_diffusion.constraints.base import Constraint, LinearConstraint, NonlinearConstraint

Part = Constraint | tuple[Constraint, float]


def check_weight(weight: object, index: int | None = None) -> float:
    """A part's weight as a float: a real number, finite and ``>= 0``, else an error naming ``weight``.

    Raises:
        TypeError: not a real number (a 0-d tensor is accepted).
        ValueError: negative, NaN or infinite.
    """
    where = "" if index is None else f" of part {index}"
    if isinstance(weight, Tensor) and weight.numel() == 1 and not weight.is_complex() and weight.dtype != torch.bool:
        weight = float(weight)
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise TypeError(f"weight{where} must be a real number, got {type(weight).__name__}")
    value = float(weight)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"weight{where} must be finite and >= 0, got {weight!r}")
    return value


class Composite(Constraint):
    """The weighted sum ``sum_i w_i c_i`` of constraints on the same ``x0_hat``.

    Args:
        parts: constraints or ``(constraint, weight)`` pairs (a bare constraint has weight 1);
            a `Composite` among them is flattened, its weights multiplied by the pair's.

    Raises:
        TypeError: a part that is not a `Constraint`, or a weight that is not a real number.
        ValueError: no parts; a weight that is negative or not finite (naming ``weight``); parts
            whose data fix different batch sizes.

    Examples:
        >>> import torch
        >>> import constrained_diffusion as cd
        >>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2, :] = 1
        >>> keep = cd.Inpainting(torch.ones(1, 1, 4, 4), mask)            # top half = 1
        >>> small = cd.SuperResolution(torch.zeros(1, 1, 2, 2), 2, "box")  # 2x2 block means = 0
        >>> both = keep + 0.5 * small
        >>> x0 = torch.zeros(1, 1, 4, 4)
        >>> per_part = [round(float(r), 3) for r in both.residuals(x0)]   # unweighted
        >>> per_part
        [2.828, 0.0]
        >>> round(float(both.residual(x0)), 3)                   # 1 * 2.828 + 0.5 * 0
        2.828
        >>> e = both.error(x0)
        >>> torch.allclose(e, keep.error(x0) + 0.5 * small.error(x0))
        True
    """

    def __init__(self, parts: Iterable[Part]) -> None:
        if isinstance(parts, Constraint):
            raise TypeError("parts must be a list of constraints or (constraint, weight) pairs, got one constraint")
        flat: list[tuple[Constraint, float]] = []
        for i, item in enumerate(parts):
            if isinstance(item, Constraint):
                constraint, weight = item, 1.0
            elif isinstance(item, tuple) and len(item) == 2:
                constraint, weight = item[0], check_weight(item[1], i)
            else:
                raise TypeError(f"part {i} must be a Constraint or a (constraint, weight) pair, got {type(item).__name__}")
            if not isinstance(constraint, Constraint):
                raise TypeError(f"part {i} must be a constrained_diffusion.Constraint, got {type(constraint).__name__}")
            if isinstance(constraint, Composite):
                flat += [(c, weight * w) for c, w in constraint.parts]
            else:
                flat.append((constraint, weight))
        if not flat:
            raise ValueError("parts must hold at least one constraint")
        self.parts: tuple[tuple[Constraint, float], ...] = tuple(flat)
        self._batch = self._agreed_batch_size()

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        """The parts' constraints, in order."""
        return tuple(c for c, _ in self.parts)

    @property
    def weights(self) -> tuple[float, ...]:
        """The parts' weights, in order."""
        return tuple(w for _, w in self.parts)

    def _agreed_batch_size(self) -> int | None:
        sizes = {i: c.batch_size for i, (c, _) in enumerate(self.parts) if c.batch_size is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError("the parts' batch sizes disagree: "
                             + ", ".join(f"part {i} ({type(self.parts[i][0]).__name__}) has {b}" for i, b in sizes.items()))
        return next(iter(sizes.values()), None)

    @property
    def batch_size(self) -> int | None:
        """The batch size the parts agree on (``None`` when none fixes one)."""
        return self._batch

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Validate every part against ``sample_shape``.

        Raises:
            ValueError: the first part that does not fit, named by index and type.
        """
        for i, (c, _) in enumerate(self.parts):
            try:
                c.validate(sample_shape)
            except ValueError as exc:
                raise ValueError(f"part {i} ({type(c).__name__}) of the Composite: {exc}") from exc

    def _check(self, i: int, x0: Tensor, e: Tensor | None, r: Tensor) -> None:
        name = f"part {i} ({type(self.parts[i][0]).__name__})"
        if e is not None and e.shape != x0.shape:
            raise ValueError(f"{name} returned an error of shape {tuple(e.shape)} for x0 of shape {tuple(x0.shape)}")
        if r.shape != (x0.shape[0],):
            raise ValueError(f"{name} returned a residual of shape {tuple(r.shape)}, expected ({x0.shape[0]},)")

    def error_and_residual(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """``(sum_i w_i e_i, sum_i w_i r_i)``: shapes ``x0.shape`` and ``(B,)``, on ``x0``'s device and dtype."""
        e_sum = torch.zeros_like(x0)
        r_sum = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for i, (c, w) in enumerate(self.parts):
            e, r = c.error_and_residual(x0)
            e, r = e.to(x0), r.to(x0)
            self._check(i, x0, e, r)
            e_sum, r_sum = e_sum + w * e, r_sum + w * r
        return e_sum, r_sum

    def error(self, x0: Tensor) -> Tensor:
        """``sum_i w_i e_i``, shape of ``x0``."""
        return self.error_and_residual(x0)[0]

    def residuals(self, x0: Tensor) -> tuple[Tensor, ...]:
        """Each part's own residual ``r_i`` ``(B,)``, unweighted, in the order of `parts`."""
        out = []
        for i, (c, _) in enumerate(self.parts):
            r = c.residual(x0).to(x0)
            self._check(i, x0, None, r)
            out.append(r)
        return tuple(out)

    def residual(self, x0: Tensor) -> Tensor:
        """The combined residual ``sum_i w_i r_i``, shape ``(B,)``."""
        total = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
        for (_, w), r in zip(self.parts, self.residuals(x0)):
            total = total + w * r
        return total

    def loss(self, x: Tensor) -> Tensor:
        """``L = sum_i w_i L_i`` ``(B,)``, differentiable: ``L_i = 0.5 ||y_i - A_i x||^2`` (linear) or ``loss_i``.

        ``-grad L`` is `error` (exactly, for linear parts and nonlinear parts whose error is
        ``-grad loss``).

        Raises:
            TypeError: a part that is neither linear nor nonlinear (e.g. an `EncodedConstraint`,
                which has no loss).
        """
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i, (c, w) in enumerate(self.parts):
            if isinstance(c, LinearConstraint):
                part = 0.5 * c.measurement_residual(x).flatten(1).pow(2).sum(dim=1)
            elif isinstance(c, NonlinearConstraint):
                part = c.loss(x)
            else:
                raise TypeError(f"part {i} ({type(c).__name__}) has no loss; only linear and nonlinear parts do")
            total = total + w * part.to(total)
        return total

    def discrepancy(self, tau: float = 1.0) -> Tensor:
        """``sum_i w_i tau sigma_i sqrt(m_i)`` ``(1,)`` or ``(B,)``: every part at its own discrepancy level.

        Raises:
            ValueError: a part without ``noise_std`` (named), or an invalid ``tau``.
        """
        total: Tensor | None = None
        for i, (c, w) in enumerate(self.parts):
            try:
                level = w * c.discrepancy(tau)
            except ValueError as exc:
                raise ValueError(f"part {i} of the Composite: {exc}") from exc
            total = level if total is None else total + level
        assert total is not None
        return total

    def __repr__(self) -> str:
        return "Composite(" + " + ".join(f"{w:g} * {type(c).__name__}" for c, w in self.parts) + ")"


Constraint.composite_class = Composite  # what c1 + c2 and w * c build

__all__ = ["Composite", "check_weight"]
