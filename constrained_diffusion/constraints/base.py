"""The constraint role: an error direction in the denoiser's output space.

A constraint looks at ``x0_hat`` (shape ``(B, *sample_shape)``) and returns

* ``error(x0)``: a direction ``e`` in the same space that reduces the violation;
* ``residual(x0)``: a ``(B,)`` tensor, ``>= 0``, zero when the constraint holds.

Two families:

* `LinearConstraint` — ``A x = y`` for a linear operator ``A``;
  ``e = A^T (y - A x0)`` (the negative gradient of ``0.5 ||y - A x0||^2``) and
  ``residual = ||y - A x0||_2`` per sample.
* `NonlinearConstraint` — ``loss(x) -> (B,)``; ``e = -grad loss(x0)``, ``residual = loss``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from constrained_diffusion._validation import check_tensor


class Constraint(ABC):
    """Abstract constraint on ``x0_hat``. Subclass and implement `error` and `residual`."""

    @abstractmethod
    def error(self, x0: Tensor) -> Tensor:
        """Direction ``e`` (shape of ``x0``) in which ``x0`` should move to reduce the violation."""

    @abstractmethod
    def residual(self, x0: Tensor) -> Tensor:
        """Per-sample violation, shape ``(B,)``, ``>= 0`` and ``0`` when satisfied."""

    def error_and_residual(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """Both at once; override when they share work (the default evaluates each)."""
        return self.error(x0), self.residual(x0)

    @property
    def batch_size(self) -> int | None:
        """Batch size the constraint's data fixes, or ``None`` when it fits any batch."""
        return None

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Check, before any network call, that the constraint fits samples of this shape.

        Raises:
            ValueError: naming the parameter whose shape does not fit.
        """
        return None


class LinearConstraint(Constraint):
    """``A x = y`` for a linear operator ``A``; subclasses implement only `forward`.

    ``error = A^T (y - A x0)``, ``residual = ||y - A x0||_2`` per sample. `adjoint`
    defaults to autograd's vector-Jacobian product of `forward` (exact for a linear
    ``A``) and may be overridden with a closed form.

    Args:
        y: measurements, shape ``(B, ...)``, ``B`` = 1 to share them across a batch.
        input_shape: shape of one input of ``A`` (usually set by `validate` from the
            denoiser's ``sample_shape``); needed only by the default `adjoint`.
    """

    def __init__(self, y: Tensor, input_shape: tuple[int, ...] | None = None) -> None:
        self.y = check_tensor("y", y)
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """Apply ``A`` to ``x`` of shape ``(B, *input_shape)``; returns the shape of ``y``."""

    def adjoint(self, v: Tensor) -> Tensor:
        """Apply ``A^T`` to ``v`` (shape of ``y``) by autograd: ``A^T v = d<A x, v>/dx``."""
        if self.input_shape is None:
            raise ValueError(
                f"{type(self).__name__}.adjoint needs input_shape (pass it to the constructor, or "
                "call validate(sample_shape) first), or override adjoint()"
            )
        x = torch.zeros(v.shape[0], *self.input_shape, dtype=v.dtype, device=v.device)
        return self._vjp(x, v)

    def _vjp(self, x: Tensor, v: Tensor) -> Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.forward(x), x, v)
        return g

    def _has_closed_form_adjoint(self) -> bool:
        return type(self).adjoint is not LinearConstraint.adjoint

    def measurement_residual(self, x0: Tensor) -> Tensor:
        """``y - A x0``, shape of ``y`` broadcast to the batch."""
        return self.y.to(x0) - self.forward(x0)

    def error_and_residual(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        r = self.measurement_residual(x0)
        e = self.adjoint(r) if self._has_closed_form_adjoint() else self._vjp(x0, r)
        return e.expand_as(x0) if e.shape != x0.shape else e, r.flatten(1).norm(dim=1)

    def error(self, x0: Tensor) -> Tensor:
        return self.error_and_residual(x0)[0]

    def residual(self, x0: Tensor) -> Tensor:
        return self.measurement_residual(x0).flatten(1).norm(dim=1)

    @property
    def batch_size(self) -> int | None:
        return int(self.y.shape[0]) if self.y.shape[0] > 1 else None

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Check that ``A`` maps ``(1, *sample_shape)`` to the shape of ``y`` (no network call)."""
        self.input_shape = tuple(sample_shape)
        probe = torch.zeros(1, *sample_shape, dtype=self.y.dtype, device=self.y.device)
        try:
            out = self.forward(probe)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(
                f"{type(self).__name__} cannot be applied to samples of shape {tuple(sample_shape)}: {exc}"
            ) from exc
        if tuple(out.shape[1:]) != tuple(self.y.shape[1:]):
            raise ValueError(
                f"y has shape {tuple(self.y.shape)} but {type(self).__name__} maps samples of shape "
                f"{tuple(sample_shape)} to (B, {', '.join(map(str, out.shape[1:]))})"
            )


class NonlinearConstraint(Constraint):
    """A constraint given by a differentiable per-sample loss ``>= 0``.

    Subclasses implement `loss`; ``error = -grad_x loss(x0)`` (one backward through the
    loss, never through the denoiser) and ``residual = loss(x0)``.
    """

    @abstractmethod
    def loss(self, x: Tensor) -> Tensor:
        """Per-sample loss, shape ``(B,)``, ``>= 0`` and ``0`` when satisfied."""

    def error_and_residual(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x0.detach().requires_grad_(True)
            loss = self.loss(x)
            if loss.shape != (x.shape[0],):
                raise ValueError(f"{type(self).__name__}.loss must return shape ({x.shape[0]},), got {tuple(loss.shape)}")
            (g,) = torch.autograd.grad(loss.sum(), x)
        return -g, loss.detach()

    def error(self, x0: Tensor) -> Tensor:
        return self.error_and_residual(x0)[0]

    def residual(self, x0: Tensor) -> Tensor:
        with torch.no_grad():
            return self.loss(x0)
