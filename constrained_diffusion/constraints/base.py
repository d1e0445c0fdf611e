"""The constraint role: an error direction in the denoiser's output space.

A constraint looks at ``x0_hat`` (shape ``(B, *sample_shape)``) and returns

* ``error(x0)``: a direction ``e`` in the same space that reduces the violation;
* ``residual(x0)``: a ``(B,)`` tensor, ``>= 0``, zero when the constraint holds.

Two families:

* `LinearConstraint` — ``A x = y`` for a linear operator ``A``;
  ``e = A^T (y - A x0)`` (the negative gradient of ``0.5 ||y - A x0||^2``) and
  ``residual = ||y - A x0||_2`` per sample.
* `NonlinearConstraint` — ``loss(x) -> (B,)``; ``e = -grad loss(x0)``, ``residual = loss``.

Constraints add up: ``c1 + c2`` and ``w * c`` build a
`constrained_diffusion.constraints.composite.Composite` (error ``sum_i w_i e_i``). That module
defines the sum as a `Constraint` and names it `Constraint.composite_class`, so this one never
imports it (no import cycle).

Noisy observations: a `LinearConstraint` takes ``noise_std`` (``sigma_y``), the standard
deviation of the noise in ``y``. It does not change `Constraint.error`; it defines the
discrepancy ``tau sigma_y sqrt(m)`` (`Constraint.discrepancy`, ``m`` = `Constraint.num_measurements`)
at which ``residual_tol="discrepancy"`` stops the inner loop (Morozov's discrepancy principle).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from constrained_diffusion._validation import check_tensor


def check_noise_std(noise_std: float | Tensor | None) -> Tensor | None:
    """Validate a measurement-noise level ``sigma_y``: ``None``, a number or a ``(B,)`` tensor, finite and ``>= 0``.

    Returns:
        ``None``, or a float32 tensor of shape ``(1,)`` (one level for every sample) or ``(B,)``.

    Raises:
        TypeError: not a number or a tensor.
        ValueError: negative, NaN or infinite values, or a tensor with more than one dimension.

    Examples:
        >>> check_noise_std(0.1)
        tensor([0.1000])
    """
    if noise_std is None:
        return None
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float, Tensor)):
        raise TypeError(f"noise_std must be a number or a (B,) tensor, got {type(noise_std).__name__}")
    value = torch.as_tensor(noise_std).detach()
    if value.dtype == torch.bool or value.is_complex() or value.ndim > 1:
        raise ValueError(f"noise_std must be a number or a 1-D (B,) tensor of reals, got shape {tuple(value.shape)} "
                         f"dtype {value.dtype}")
    value = value.to(torch.float32).reshape(-1)
    if value.numel() == 0 or not bool(value.isfinite().all()) or bool((value < 0).any()):
        raise ValueError(f"noise_std must be finite and >= 0 (the measurement noise's standard deviation in the data's "
                         f"units), got {value.tolist()}")
    return value


class Constraint(ABC):
    """Abstract constraint on ``x0_hat``. Subclass and implement `error` and `residual`."""

    composite_class: ClassVar[type[Constraint]]
    """What ``c1 + c2`` and ``w * c`` build: `Composite`, named here by the module that defines it."""

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

    @property
    def noise_std(self) -> Tensor | None:
        """``sigma_y``, the standard deviation of the measurement noise: ``(1,)`` or ``(B,)``, or ``None`` (unknown)."""
        return None

    @property
    def num_measurements(self) -> Tensor | None:
        """``m``, the number of noisy measurements per sample, ``(1,)`` or ``(B,)``; ``None`` where undefined."""
        return None

    def discrepancy(self, tau: float = 1.0) -> Tensor:
        """Morozov's discrepancy level ``tau sigma_y sqrt(m)`` per sample, ``(1,)`` or ``(B,)``.

        With ``y = A x + n``, ``n ~ N(0, sigma_y^2 I_m)``, the truth itself has
        ``E ||y - A x||^2 = sigma_y^2 m``: fitting ``||y - A x0||`` below this level fits the
        noise. ``residual_tol="discrepancy"`` stops the inner loop there.

        Args:
            tau: the safety factor ``tau > 0`` (Morozov: slightly above 1).

        Raises:
            ValueError: the constraint has no `noise_std`, or ``tau`` is not finite and ``> 0``.
        """
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
        sigma, m = self.noise_std, self.num_measurements
        if sigma is None or m is None:
            raise ValueError(f"{type(self).__name__} has no noise_std (the measurement noise's standard deviation)")
        return float(tau) * sigma * m.to(sigma).sqrt()

    def __add__(self, other: object) -> Constraint:
        """``c1 + c2``: the `Composite` with error ``e_1 + e_2`` (sums of sums flatten)."""
        if not isinstance(other, Constraint):
            return NotImplemented
        return self.composite_class([self, other])  # type: ignore[call-arg]

    def __radd__(self, other: object) -> Constraint:
        """``0 + c`` is ``c`` (so that ``sum(constraints)`` works)."""
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __mul__(self, weight: object) -> Constraint:
        """``c * w``: the `Composite` with error ``w e`` (``w`` finite and ``>= 0``)."""
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return self.composite_class([(self, weight)])  # type: ignore[call-arg]

    __rmul__ = __mul__


def check_observation(y: Tensor, name: str = "y") -> Tensor:
    """Refuse an observation that is an empty batch or whose residual would overflow; returns ``y``.

    The residual ``||y - A x0||_2`` is formed in ``y``'s precision (float32 for half-precision
    ``y``): where ``||y_i||_2`` itself is not finite (``y = 1e30`` in float32: ``y^2`` overflows) every
    residual would be ``inf`` and the constraint silently meaningless. One reduction at
    construction, none while sampling.

    Raises:
        ValueError: ``y`` has batch size 0, or a sample whose norm overflows (naming ``name``,
            its largest magnitude and the dtype).

    Examples:
        >>> check_observation(torch.full((1, 4), 1e30))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: y: the residual ||y - A x0|| of sample 0 overflows torch.float32 (max |y| = 1e+30); observations ... rescale it
    """
    if y.ndim >= 1 and y.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(y.shape)}); give at least one observation")
    if y.numel():
        work = y if y.dtype == torch.float64 else y.float()
        norms = work.reshape(work.shape[0], -1).norm(dim=1) if work.ndim >= 1 else work.abs()
        bad = ~norms.isfinite()
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0]) if bad.ndim else 0
            raise ValueError(f"{name}: the residual ||{name} - A x0|| of sample {i} overflows {work.dtype} "
                             f"(max |{name}| = {float(work.abs().max()):.3g}); observations are in the data's units "
                             "(pixels in [-1, 1]): rescale it")
    return y


class LinearConstraint(Constraint):
    """``A x = y`` for a linear operator ``A``; subclasses implement only `forward`.

    ``error = A^T (y - A x0)``, ``residual = ||y - A x0||_2`` per sample. `adjoint`
    defaults to autograd's vector-Jacobian product of `forward` (exact for a linear
    ``A``) and may be overridden with a closed form.

    Args:
        y: measurements, shape ``(B, ...)``, ``B`` = 1 to share them across a batch.
        input_shape: shape of one input of ``A`` (usually set by `validate` from the
            denoiser's ``sample_shape``); needed only by the default `adjoint`.
        noise_std: ``sigma_y``, the standard deviation of the (Gaussian) noise in ``y``, in the
            data's units (pixels in ``[-1, 1]``): a number or one per sample ``(B,)``, finite and
            ``>= 0``; ``None`` (default) when unknown. It leaves `error` unchanged and sets the
            `discrepancy` level ``tau sigma_y sqrt(m)``.

    Raises:
        ValueError: NaN/inf in ``y``, an empty ``y`` or one whose residual would overflow
            (`check_observation`); a ``noise_std`` that is negative, not finite, or has a batch
            size other than ``y``'s.
    """

    def __init__(self, y: Tensor, input_shape: tuple[int, ...] | None = None,
                 noise_std: float | Tensor | None = None) -> None:
        self.y = check_observation(check_tensor("y", y))
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._noise_std = check_noise_std(noise_std)
        n, B = (self._noise_std.numel() if self._noise_std is not None else 1), int(self.y.shape[0])
        if n > 1 and B > 1 and n != B:
            raise ValueError(f"noise_std has {n} values but y has batch size {B}; give one level or one per sample")

    @property
    def noise_std(self) -> Tensor | None:
        """``sigma_y`` as a ``(1,)`` or ``(B,)`` float32 tensor, or ``None``."""
        return getattr(self, "_noise_std", None)

    @property
    def num_measurements(self) -> Tensor:
        """``m``: the entries of one sample of ``y``, as a ``(1,)`` float tensor (subclasses refine it)."""
        return torch.tensor([float(self.y[0].numel())])

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
        n = self.noise_std.numel() if self.noise_std is not None else 1
        B = max(int(self.y.shape[0]), n)
        return B if B > 1 else None

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
