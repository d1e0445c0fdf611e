r"""deepinv forward operators as `constrained_diffusion` constraints.

`deepinv <https://deepinv.github.io>`_ models a measurement as ``y = N(A(x))``: a forward
operator ``A`` (``physics.A``), a noise model ``N`` (``physics.noise_model``) and a sensor
non-linearity. `PhysicsConstraint` turns a ``deepinv.physics.Physics`` and the measurements
``y`` into a constraint on the denoiser's clean estimate ``x0_hat``, using the **noiseless**
``A`` (noise and sensor models are never applied: the constraint asks for ``A x = y``):

* a ``deepinv.physics.LinearPhysics`` becomes a `LinearPhysicsConstraint`, a
  ``cd.LinearConstraint`` whose ``forward`` is ``physics.A`` and whose ``adjoint`` is
  ``physics.A_adjoint``:

  .. math::

      e = A^\top (y - A \hat x_0), \qquad r = \lVert y - A \hat x_0 \rVert_2 ;

* any other ``Physics`` becomes a `NonlinearPhysicsConstraint`, a ``cd.NonlinearConstraint``
  with the per-sample loss

  .. math::

      \mathcal{L}(x) = \lVert y - A(x) \rVert_2^2 , \qquad e = -\nabla_x \mathcal{L}(\hat x_0)
      = 2\, J_A(\hat x_0)^\top (y - A(\hat x_0)) .

Pixel range. The library's samples are in ``[-1, 1]``; deepinv's examples and datasets use
``[0, 1]``. ``physics_range="[-1,1]"`` (the default) applies ``A`` to the sample as it is, so
``y`` must be ``A`` of a ``[-1, 1]`` image. ``physics_range="[0,1]"`` applies ``A`` to
``u = (x + 1) / 2``, so ``y`` is in deepinv's units. For a linear ``A`` the two describe the
same affine constraint, ``A u = y  <=>  A x = 2 y - A \mathbf{1}``, which is what
`LinearPhysicsConstraint` stores (its ``y`` attribute and residual are then in ``[-1, 1]``
units, twice deepinv's); for a non-linear ``A`` (a range-dependent one such as ``Haze`` or a
saturation) only the right range gives the right constraint.
"""

from __future__ import annotations

from typing import Any, Literal

import deepinv
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from constrained_diffusion.constraints.base import Constraint, LinearConstraint, NonlinearConstraint
from constrained_diffusion.sampling.corrections.operators import SpectralOperator

__all__ = [
    "LinearPhysicsConstraint",
    "NonlinearPhysicsConstraint",
    "PhysicsConstraint",
    "PhysicsConstraintConfig",
    "observe",
    "physics_dtype",
    "physics_noise_std",
]

PhysicsRange = Literal["[-1,1]", "[0,1]"]

# errors a deepinv operator raises on an input it cannot take (shape, dtype, channel count)
_OPERATOR_ERRORS = (RuntimeError, ValueError, IndexError, AssertionError, TypeError)


class PhysicsConstraintConfig(BaseModel):
    """Options of a `PhysicsConstraint` (validated by pydantic; an unknown option is an error).

    Attributes:
        physics_range: the pixel range the physics expects: ``"[-1,1]"`` (the library's,
            default: ``A`` sees the sample itself) or ``"[0,1]"`` (deepinv's: ``A`` sees
            ``(x + 1) / 2`` and ``y`` is in ``[0, 1]`` units).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    physics_range: PhysicsRange = "[-1,1]"


def physics_dtype(physics: torch.nn.Module) -> torch.dtype | None:
    """The real floating dtype of a physics' own tensors, or ``None`` when it has none.

    deepinv's bookkeeping buffer ``_device_holder`` (always the default dtype) is ignored,
    and so are complex buffers (MRI's masks) and integer ones.

    Raises:
        TypeError: the physics holds real floating tensors of more than one dtype.
    """
    dtypes = {
        t.dtype
        for name, t in [*physics.named_buffers(), *physics.named_parameters()]
        if t.is_floating_point() and not name.endswith("_device_holder")
    }
    if len(dtypes) > 1:
        raise TypeError(f"physics holds tensors of several dtypes {sorted(map(str, dtypes))}; convert it with physics.to(dtype)")
    return next(iter(dtypes), None)


def _physics_device(physics: torch.nn.Module) -> torch.device | None:
    for t in [*physics.buffers(), *physics.parameters()]:
        return t.device
    return None


def physics_noise_std(physics: torch.nn.Module, physics_range: PhysicsRange = "[-1,1]") -> Tensor | None:
    """The ``sigma`` of a physics' ``GaussianNoise`` model in the library's ``[-1, 1]`` units, else ``None``.

    deepinv's ``sigma`` is in the physics' units: with ``physics_range="[0,1]"`` it is doubled
    (one ``[0, 1]`` unit is two ``[-1, 1]`` units). Returns a float32 ``(1,)`` or ``(B,)`` tensor.

    Examples:
        >>> import deepinv
        >>> physics_noise_std(deepinv.physics.Denoising(deepinv.physics.GaussianNoise(sigma=0.05)), "[0,1]")
        tensor([0.1000])
    """
    noise = getattr(physics, "noise_model", None)
    if not isinstance(noise, deepinv.physics.GaussianNoise):
        return None
    sigma = torch.as_tensor(noise.sigma).detach().to(device="cpu", dtype=torch.float32).reshape(-1)
    return sigma * 2 if physics_range == "[0,1]" else sigma


def observe(physics: deepinv.physics.Physics, x: Tensor, physics_range: PhysicsRange = "[-1,1]", noise: bool = False) -> Tensor:
    """Measurements of images ``x`` ``(B, C, H, W)`` in ``[-1, 1]``: ``A(u)``, in ``physics_range`` units.

    ``u`` is ``x`` (``"[-1,1]"``) or ``(x + 1) / 2`` (``"[0,1]"``), cast to the physics' dtype
    and device. ``noise=True`` applies the physics' noise model and sensor, ``physics(u)``
    (deepinv's random draw: seed it with ``torch.manual_seed`` or the noise model's ``rng``).

    Examples:
        >>> import torch, deepinv
        >>> y = observe(deepinv.physics.Denoising(), -torch.ones(1, 1, 2, 2), "[0,1]")
        >>> float(y.abs().max())
        0.0
    """
    if physics_range not in ("[-1,1]", "[0,1]"):
        raise ValueError(f"physics_range must be '[-1,1]' or '[0,1]', got {physics_range!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (B, C, H, W) in [-1, 1], got {type(x).__name__}")
    u = x.detach().to(device=_physics_device(physics) or x.device, dtype=physics_dtype(physics) or x.dtype)
    if physics_range == "[0,1]":
        u = (u + 1) / 2
    with torch.no_grad():
        return physics(u) if noise else physics.A(u)


class PhysicsConstraint(Constraint):
    r"""A constraint ``A x = y`` from a deepinv physics; the class picks linear or non-linear.

    ``PhysicsConstraint(physics, y)`` returns a `LinearPhysicsConstraint` (a
    ``cd.LinearConstraint``) when ``physics`` is a ``deepinv.physics.LinearPhysics`` and a
    `NonlinearPhysicsConstraint` (a ``cd.NonlinearConstraint`` on
    :math:`\lVert y - A(x)\rVert_2^2` per sample) otherwise; both are instances of
    `PhysicsConstraint`. Only the noiseless operator ``physics.A`` is used.

    Args:
        physics: a ``deepinv.physics.Physics`` (an ``nn.Module``) acting on images
            ``(B, C, H, W)``; its own tensors fix the device and dtype of the computation.
        y: measurements, shape ``(B, *m)`` with ``(1, *m)`` shared across the batch, in the
            units of ``physics_range``; real floating point, on the physics' device, in the
            physics' dtype. ``(B, *m)`` must be what ``physics.A`` returns for ``(B, C, H, W)``
            (checked by `validate`).
        physics_range: ``"[-1,1]"`` (default: ``A`` sees the sample) or ``"[0,1]"`` (``A`` sees
            ``(x + 1) / 2``, ``y`` in deepinv's ``[0, 1]`` units); see the module docstring.
        noise_std: linear physics only: ``sigma_y``, the standard deviation of the noise in
            ``y`` in the library's ``[-1, 1]`` units (a number or one per sample ``(B,)``), for
            ``residual_tol="discrepancy"``. Default: the ``sigma`` of the physics'
            ``GaussianNoise`` model converted to those units (`physics_noise_std`), else none.

    Raises:
        TypeError: ``physics`` is not a ``deepinv.physics.Physics``; ``y`` is not a real
            floating tensor, or its dtype differs from the physics'.
        ValueError: ``y`` has no batch dimension, non-finite values, or lies on another device
            than the physics; a ``noise_std`` for a non-linear physics, or an invalid one.
        pydantic.ValidationError: ``physics_range`` is not one of the two ranges (a ``ValueError``).

    Examples:
        >>> import torch, deepinv, constrained_diffusion as cd
        >>> physics = deepinv.physics.Downsampling(img_size=(1, 8, 8), factor=2, filter=None)
        >>> y = physics.A(torch.ones(1, 1, 8, 8))
        >>> c = PhysicsConstraint(physics, y)
        >>> isinstance(c, cd.LinearConstraint), type(c).__name__
        (True, 'LinearPhysicsConstraint')
        >>> c.validate((1, 8, 8))
        >>> float(c.residual(torch.ones(2, 1, 8, 8)).max())
        0.0
    """

    physics: deepinv.physics.Physics
    config: PhysicsConstraintConfig

    def __new__(cls, physics: Any = None, *args: Any, **kwargs: Any) -> PhysicsConstraint:
        if cls is PhysicsConstraint:
            cls = LinearPhysicsConstraint if isinstance(physics, deepinv.physics.LinearPhysics) else NonlinearPhysicsConstraint
        return super().__new__(cls)

    def __init__(self, physics: deepinv.physics.Physics, y: Tensor, physics_range: PhysicsRange = "[-1,1]",
                 noise_std: float | Tensor | None = None) -> None:
        # the checks both kinds share; LinearPhysicsConstraint / NonlinearPhysicsConstraint do the rest (noise_std included)
        self._y_checked = self._setup(physics, y, physics_range)

    # ---------------------------------------------------------------- shared checks
    def _setup(self, physics: Any, y: Any, physics_range: str) -> Tensor:
        """Check ``physics``, ``y`` and the options; set ``physics``, ``config``, ``dtype``, ``device``; return ``y``."""
        if not isinstance(physics, deepinv.physics.Physics):
            raise TypeError(f"physics must be a deepinv.physics.Physics, got {type(physics).__name__}")
        self.config = PhysicsConstraintConfig(physics_range=physics_range)
        self.physics = physics
        self.dtype = physics_dtype(physics)
        self.device = _physics_device(physics)
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor of measurements (B, ...), got {type(y).__name__}")
        if not y.is_floating_point():
            raise TypeError(f"y must be a real floating-point tensor, got dtype {y.dtype}"
                            + ("; split a complex measurement into real and imaginary channels" if y.is_complex() else ""))
        if self.dtype is not None and y.dtype != self.dtype:
            raise TypeError(f"y has dtype {y.dtype} but the physics computes in {self.dtype}; "
                            f"convert y with y.to({self.dtype}) or the physics with physics.to({y.dtype})")
        if y.ndim < 2:
            raise ValueError(f"y must have a batch dimension, shape (B, ...) with B = 1 to share it, got {tuple(y.shape)}")
        if self.device is not None and y.device != self.device:
            raise ValueError(f"y is on {y.device} but the physics is on {self.device}; move one with .to()")
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y has non-finite values (nan or inf)")
        if self.dtype is None:
            self.dtype = y.dtype
        if self.device is None:
            self.device = y.device
        return y.detach()

    @property
    def physics_range(self) -> PhysicsRange:
        """``"[-1,1]"`` or ``"[0,1]"``: the pixel range ``physics.A`` sees."""
        return self.config.physics_range

    def to_physics(self, x: Tensor) -> Tensor:
        """A sample ``(B, C, H, W)`` in ``[-1, 1]`` as the physics sees it (range, dtype, device)."""
        x = x.to(device=self.device, dtype=self.dtype)
        return (x + 1) / 2 if self.physics_range == "[0,1]" else x

    def apply_A(self, x: Tensor) -> Tensor:
        """``physics.A`` of a sample ``(B, C, H, W)`` in ``[-1, 1]``, in ``physics_range`` units, without noise."""
        out = self.physics.A(self.to_physics(x))
        if not isinstance(out, Tensor):
            raise TypeError(f"physics.A must return a tensor, got {type(out).__name__} (TensorList physics are not supported)")
        return out

    def _probe(self, sample_shape: tuple[int, ...]) -> Tensor:
        """``A`` of one zero sample, with an error naming the sample shape when the physics rejects it."""
        if len(sample_shape) != 3:
            raise ValueError(f"{type(self).__name__} needs image samples of shape (C, H, W), got {tuple(sample_shape)}")
        probe = torch.zeros(1, *sample_shape, device=self.device, dtype=self.dtype)
        try:
            with torch.no_grad():
                return self.apply_A(probe)
        except _OPERATOR_ERRORS as exc:
            raise ValueError(f"physics {type(self.physics).__name__} cannot be applied to samples of shape {tuple(sample_shape)}: {exc}") from exc

    def _check_measurement_shape(self, out: Tensor, sample_shape: tuple[int, ...], y: Tensor) -> None:
        if tuple(out.shape[1:]) != tuple(y.shape[1:]):
            raise ValueError(
                f"y has shape {tuple(y.shape)} but physics {type(self.physics).__name__}.A maps samples of shape "
                f"{tuple(sample_shape)} to (B, {', '.join(map(str, out.shape[1:]))})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(physics={type(self.physics).__name__}, y={tuple(self._y_shape)}, physics_range={self.physics_range!r})"


class LinearPhysicsConstraint(PhysicsConstraint, LinearConstraint):
    r"""``A x = y`` for a ``deepinv.physics.LinearPhysics`` ``A``: a ``cd.LinearConstraint``.

    ``forward`` is ``physics.A`` and ``adjoint`` is ``physics.A_adjoint`` (deepinv's closed
    form where it has one), so ``e = A^T (y - A x0)`` costs one ``A`` and one ``A^T``, no
    autograd. With ``physics_range="[0,1]"`` the measurements as given stay in ``y_physics``
    and ``y`` becomes ``y' = 2 y - A 1`` (the same constraint in ``[-1, 1]`` units; see the
    module docstring) once the sample shape is known: at `validate` or the first evaluation.

    Built by ``PhysicsConstraint(physics, y)``; the arguments and errors are
    `PhysicsConstraint`'s, plus a ``TypeError`` when ``physics`` is not linear.
    """

    def __init__(self, physics: deepinv.physics.LinearPhysics, y: Tensor, physics_range: PhysicsRange = "[-1,1]",
                 noise_std: float | Tensor | None = None) -> None:
        if not isinstance(physics, deepinv.physics.LinearPhysics):
            raise TypeError(
                f"physics must be a deepinv.physics.LinearPhysics for {type(self).__name__}, got {type(physics).__name__}; "
                "use PhysicsConstraint(physics, y), which picks the non-linear constraint for it"
            )
        PhysicsConstraint.__init__(self, physics, y, physics_range)
        y = self._y_checked
        self.y_physics = y
        self._y_shape = tuple(y.shape)
        self._offset_shape: tuple[int, ...] | None = None
        if noise_std is None:
            noise_std = physics_noise_std(physics, self.physics_range)
        LinearConstraint.__init__(self, y, noise_std=noise_std)

    def _convert_y(self, sample_shape: tuple[int, ...]) -> None:
        """With ``physics_range="[0,1]"``: ``self.y = 2 y - A 1`` for samples of this shape (cached)."""
        if self.physics_range != "[0,1]" or self._offset_shape == sample_shape:
            return
        with torch.no_grad():
            ones = torch.ones(1, *sample_shape, device=self.device, dtype=self.dtype)
            self.y = 2 * self.y_physics - self.physics.A(ones)
        self._offset_shape = sample_shape

    def forward(self, x: Tensor) -> Tensor:
        """``A x`` for ``x`` of shape ``(B, C, H, W)``: ``physics.A``, returned in ``x``'s dtype."""
        return self.physics.A(x.to(device=self.device, dtype=self.dtype)).to(device=x.device, dtype=x.dtype)

    def adjoint(self, v: Tensor) -> Tensor:
        """``A^T v`` for ``v`` of the shape of ``y``: ``physics.A_adjoint``, returned in ``v``'s dtype."""
        return self.physics.A_adjoint(v.to(device=self.device, dtype=self.dtype)).to(device=v.device, dtype=v.dtype)

    def measurement_residual(self, x0: Tensor) -> Tensor:
        """``y - A x0`` in ``[-1, 1]`` units, shape of ``y`` broadcast to the batch."""
        self._convert_y(tuple(x0.shape[1:]))
        return super().measurement_residual(x0)

    def svd(self) -> SpectralOperator:
        """``A = U diag(mask) V^T`` for a ``deepinv.physics.DecomposablePhysics``, for DDRM, DDNM, ΠGDM and DiffPIR.

        Returns a `cd_deepinv.spectral.PhysicsSpectralOperator` on the constraint's ``y`` (in
        ``[-1, 1]`` units; with ``physics_range="[0,1]"`` after `validate`, which converts it).

        Raises:
            TypeError: the physics is not decomposable (no closed-form SVD: blur, downsampling, MRI, ...).
            ValueError: ``physics_range="[0,1]"`` before `validate` fixed the converted ``y``.
        """
        from cd_deepinv.spectral import PhysicsSpectralOperator

        if not isinstance(self.physics, deepinv.physics.DecomposablePhysics):
            raise TypeError(f"the SVD methods (DDRM, DDNM, PiGDM, DiffPIR) need a deepinv.physics.DecomposablePhysics "
                            f"(A = U diag(mask) V^T: Inpainting, Denoising, Decolorize, ...); {type(self.physics).__name__} is not one")
        if self.physics_range == "[0,1]" and self._offset_shape is None:
            raise ValueError("call validate(sample_shape) before svd() with physics_range='[0,1]' (it converts y to [-1, 1] units)")
        return PhysicsSpectralOperator(self.physics, self.y)

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Check that ``A`` maps ``(1, *sample_shape)`` to the shape of ``y`` and ``A^T`` maps back.

        With ``physics_range="[0,1]"`` this also fixes ``y' = 2 y - A 1`` (it needs the shape of ``1``).

        Raises:
            ValueError: samples that are not ``(C, H, W)`` images, a physics that rejects them,
                a ``y`` whose shape is not ``A``'s output, or an ``A^T`` that does not return
                the sample shape.
        """
        out = self._probe(tuple(sample_shape))
        self._check_measurement_shape(out, tuple(sample_shape), self.y_physics)
        try:
            with torch.no_grad():
                back = self.physics.A_adjoint(torch.zeros_like(out))
        except _OPERATOR_ERRORS as exc:
            raise ValueError(f"physics {type(self.physics).__name__}.A_adjoint fails on measurements of shape {tuple(out.shape)}: {exc}") from exc
        if tuple(back.shape[1:]) != tuple(sample_shape):
            raise ValueError(
                f"physics {type(self.physics).__name__}.A_adjoint maps measurements {tuple(out.shape)} to {tuple(back.shape)}, "
                f"not to samples of shape (1, {', '.join(map(str, sample_shape))})"
            )
        self.input_shape = tuple(sample_shape)
        self._convert_y(tuple(sample_shape))


class NonlinearPhysicsConstraint(PhysicsConstraint, NonlinearConstraint):
    r"""``A(x) = y`` for a non-linear deepinv physics: a ``cd.NonlinearConstraint``.

    Per sample, with ``u`` the sample in ``physics_range`` units,

    .. math::

        \mathcal{L}(x) = \lVert y - A(u) \rVert_2^2 \quad (\text{summed over all measurement entries}),

    so ``residual`` is the squared norm and ``e = -\nabla_x \mathcal{L}`` is one backward
    through ``physics.A`` (never through the denoiser). ``physics.A`` must be differentiable.

    Built by ``PhysicsConstraint(physics, y)``; the arguments and errors are `PhysicsConstraint`'s.
    """

    def __init__(self, physics: deepinv.physics.Physics, y: Tensor, physics_range: PhysicsRange = "[-1,1]",
                 noise_std: float | Tensor | None = None) -> None:
        if noise_std is not None:
            raise ValueError(
                "noise_std is for linear physics only: the non-linear constraint's residual is the squared misfit "
                "||y - A(x)||^2, not the norm the discrepancy principle compares with sigma sqrt(m)"
            )
        PhysicsConstraint.__init__(self, physics, y, physics_range)
        self.y = self._y_checked
        self._y_shape = tuple(self.y.shape)

    def loss(self, x: Tensor) -> Tensor:
        """``||y - A(x)||^2`` per sample: shape ``(B,)``, in ``x``'s dtype.

        Args:
            x: ``(B, C, H, W)`` in ``[-1, 1]``; ``B`` must equal the batch of ``y`` unless that is 1.
        """
        n = self.y.shape[0]
        if n > 1 and x.shape[0] != n:
            raise ValueError(f"y has batch {n} but the samples have batch {x.shape[0]}")
        r = self.y - self.apply_A(x)
        return r.flatten(1).pow(2).sum(dim=1).to(device=x.device, dtype=x.dtype)

    @property
    def batch_size(self) -> int | None:
        return int(self.y.shape[0]) if self.y.shape[0] > 1 else None

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Check that ``A`` maps ``(1, *sample_shape)`` to the shape of ``y``.

        Raises:
            ValueError: samples that are not ``(C, H, W)`` images, a physics that rejects them,
                or a ``y`` whose shape is not ``A``'s output.
        """
        out = self._probe(tuple(sample_shape))
        self._check_measurement_shape(out, tuple(sample_shape), self.y)
