"""Constraints by name: built-ins and plugins registered through entry points.

A third-party package makes its constraints available to `load` (and to the CLI) by declaring
an entry point in the group ``constrained_diffusion.constraints`` whose value is a factory —
a `Constraint` subclass or any callable returning a `Constraint`:

```toml
[project.entry-points."constrained_diffusion.constraints"]
clip-style = "cd_clip_style:CLIPStyle"
```

After ``pip install`` the name is listed by `names` and built by
``cd.constraints.load("clip-style", reference=..., clip="openai/clip-vit-base-patch16")``.
Names registered in-process with `register` take precedence over entry points.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from constrained_diffusion.constraints.base import Constraint

ENTRY_POINT_GROUP = "constrained_diffusion.constraints"

Factory = Callable[..., Constraint]

_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make ``factory`` (a `Constraint` subclass or a callable returning one) loadable as ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    _REGISTRY[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """Every loadable constraint name: built-ins, `register`-ed ones and installed plugins."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_factory(name: str) -> Factory:
    """The factory registered as ``name`` (loading its plugin's module if needed).

    Raises:
        ValueError: ``name`` is not registered; the message lists the known names.
        ImportError: the plugin's module cannot be imported (names the plugin).
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    eps = _entry_points()
    if name not in eps:
        raise ValueError(f"unknown constraint {name!r}; installed constraints: {names()}")
    try:
        factory = eps[name].load()
    except ImportError as exc:
        raise ImportError(f"constraint plugin {name!r} ({eps[name].value}) failed to import: {exc}") from exc
    if not callable(factory):
        raise TypeError(f"entry point {name!r} ({eps[name].value}) is not callable")
    return factory


def load(name: str, /, **kwargs: Any) -> Constraint:
    """Build the constraint registered as ``name`` with keyword arguments.

    Examples:
        >>> import torch, constrained_diffusion as cd
        >>> y = torch.zeros(1, 1, 8, 8); mask = torch.ones(1, 1, 8, 8)
        >>> type(cd.constraints.load("inpainting", y=y, mask=mask)).__name__
        'Inpainting'

    Raises:
        ValueError: unknown name.
        TypeError: the factory did not return a `Constraint`.
    """
    constraint = get_factory(name)(**kwargs)
    if not isinstance(constraint, Constraint):
        raise TypeError(f"constraint {name!r} returned {type(constraint).__name__}, not a constrained_diffusion.Constraint")
    return constraint
