"""The ``deepinv`` entry point: a `PhysicsConstraint` from a physics class name and JSON-able options.

``cd.constraints.load("deepinv", ...)`` and ``constrained-diffusion sample --constraint deepinv
--arg ...`` call `load_physics_constraint`. It accepts everything the CLI can spell: the physics
as a class name of ``deepinv.physics`` with keyword arguments (JSON: numbers, strings, lists,
and filters written as ``{"gaussian_blur": {"sigma": [1.5, 1.5]}}``), and the measurements either
directly (``y``) or as the noiseless observation of a ground truth (``x``: the CLI's
``@digit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import deepinv
from torch import Tensor

from cd_deepinv.physics import PhysicsConstraint, PhysicsRange, observe

__all__ = ["FILTERS", "build_physics", "load_physics_constraint"]

#: the filter constructors of ``deepinv.physics.functional`` a physics keyword may name as ``{"name": {kwargs}}``
FILTERS: tuple[str, ...] = ("gaussian_blur", "bilinear_filter", "bicubic_filter", "sinc_filter")


def _physics_classes() -> dict[str, type]:
    return {
        name: obj for name in dir(deepinv.physics)
        if isinstance(obj := getattr(deepinv.physics, name), type) and issubclass(obj, deepinv.physics.Physics)
    }


def _resolve(key: str, value: Any) -> Any:
    """One JSON keyword value as deepinv wants it: lists become tuples, ``{"filter_name": {...}}`` a filter tensor."""
    if isinstance(value, list):
        return tuple(_resolve(key, v) for v in value)
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in FILTERS:
            raise ValueError(
                f"physics_kwargs[{key!r}]: a mapping must name one filter of deepinv.physics.functional, "
                f"{{name: {{keyword: value}}}} with name in {list(FILTERS)}, got {dict(value)!r}"
            )
        (name, options), = value.items()
        if not isinstance(options, Mapping):
            raise ValueError(f"physics_kwargs[{key!r}]: the options of filter {name!r} must be a mapping, got {options!r}")
        return getattr(deepinv.physics.functional, name)(**{k: _resolve(k, v) for k, v in options.items()})
    return value


def build_physics(name: str, physics_kwargs: Mapping[str, Any] | None = None) -> deepinv.physics.Physics:
    """Build ``deepinv.physics.<name>(**physics_kwargs)`` from JSON-able options.

    Lists become tuples (``img_size``), and a mapping ``{"gaussian_blur": {"sigma": 1.5}}``
    (one of `FILTERS`, the functions of ``deepinv.physics.functional``) becomes that filter
    tensor; note that a scalar ``sigma`` gives deepinv's 1-D Gaussian, ``[s, s]`` the 2-D one.

    Examples:
        >>> physics = build_physics("BlurFFT", {"img_size": [1, 8, 8], "filter": {"gaussian_blur": {"sigma": [1.0, 1.0]}}})
        >>> type(physics).__name__, tuple(physics.filter.shape)
        ('BlurFFT', (1, 1, 9, 9))

    Raises:
        ValueError: ``name`` is not a physics class of ``deepinv.physics`` (the message lists
            them), a malformed filter mapping, or keywords the class rejects.
    """
    classes = _physics_classes()
    if name not in classes:
        raise ValueError(f"physics: {name!r} is not a deepinv.physics class; known: {', '.join(sorted(classes))}")
    kwargs = {k: _resolve(k, v) for k, v in dict(physics_kwargs or {}).items()}
    try:
        return classes[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"physics_kwargs: deepinv.physics.{name} rejects {sorted(kwargs)}: {exc}") from exc


def load_physics_constraint(physics: str | deepinv.physics.Physics, y: Tensor | None = None, x: Tensor | None = None,
                            physics_kwargs: Mapping[str, Any] | None = None, physics_range: PhysicsRange = "[-1,1]",
                            noise_std: float | Tensor | None = None) -> PhysicsConstraint:
    """The entry point ``deepinv``: a `PhysicsConstraint` from a name or a physics, and ``y`` or ``x``.

    Args:
        physics: a ``deepinv.physics.Physics``, or the name of a class in ``deepinv.physics``
            (``"BlurFFT"``, ``"Downsampling"``, ``"Inpainting"``, ``"CompressedSensing"``, ...)
            built with ``physics_kwargs`` by `build_physics`.
        y: the measurements ``(B or 1, *m)`` in ``physics_range`` units; or
        x: a ground truth ``(B, C, H, W)`` in ``[-1, 1]``; then ``y = A(x)`` (noiseless; the
            physics' noise model is not applied). Exactly one of ``y`` and ``x``.
        physics_kwargs: keyword arguments of the physics class (only with a name).
        physics_range: ``"[-1,1]"`` or ``"[0,1]"``, see `PhysicsConstraint`.
        noise_std: ``sigma_y`` in ``[-1, 1]`` units (linear physics), see `PhysicsConstraint`.

    Examples:
        >>> import torch, constrained_diffusion as cd
        >>> x = torch.zeros(1, 1, 8, 8)
        >>> c = cd.constraints.load("deepinv", physics="Downsampling", x=x,
        ...                         physics_kwargs={"img_size": [1, 8, 8], "factor": 2, "filter": "bicubic"})
        >>> type(c).__name__, tuple(c.y.shape)
        ('LinearPhysicsConstraint', (1, 1, 4, 4))

    Raises:
        ValueError: neither or both of ``y`` and ``x``; ``physics_kwargs`` with a physics object;
            the errors of `build_physics` and `PhysicsConstraint`.
        TypeError: ``physics`` is neither a name nor a physics; ``x`` is not a tensor.
    """
    if (y is None) == (x is None):
        raise ValueError("give exactly one of y (the measurements) and x (a ground truth to observe through the physics)")
    if isinstance(physics, str):
        physics = build_physics(physics, physics_kwargs)
    elif physics_kwargs:
        raise ValueError("physics_kwargs are only for a physics given by name; configure a physics object yourself")
    if not isinstance(physics, deepinv.physics.Physics):
        raise TypeError(f"physics must be a deepinv.physics class name or a deepinv.physics.Physics, got {type(physics).__name__}")
    if x is not None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor (B, C, H, W) in [-1, 1], got {type(x).__name__}")
        y = observe(physics, x, physics_range)
    return PhysicsConstraint(physics, y, physics_range, noise_std)

