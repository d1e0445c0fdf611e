"""Solvers by name, so that configuration files and the CLI can pick one.

Registering is one decorator on the class (its ``name`` and ``Config`` are read from it)::

    @register
    class MySolver(Solver):
        name = "my-solver"
        ...

The sampler itself never needs the registry: ``ConstrainedSampler(model, MySolver())`` uses
the instance as given, registered or not.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from constrained_diffusion.solvers.base import Solver, SolverConfig

S = TypeVar("S", bound=type[Solver])

_REGISTRY: dict[str, type[Solver]] = {}


def register(solver_cls: S, config_cls: type[BaseModel] | None = None) -> S:
    """Make ``solver_cls`` available under ``solver_cls.name``; usable as a class decorator.

    Args:
        solver_cls: a `Solver` subclass.
        config_cls: its options' model (default: ``solver_cls.Config``; given for backward
            compatibility with ``register(cls, cfg)``).

    Raises:
        TypeError: not a `Solver` subclass, or a config that is not a `SolverConfig`-like model.
    """
    if not (isinstance(solver_cls, type) and issubclass(solver_cls, Solver)):
        raise TypeError(f"register needs a Solver subclass, got {solver_cls!r}")
    if config_cls is not None:
        if not (isinstance(config_cls, type) and issubclass(config_cls, BaseModel)):
            raise TypeError(f"config_cls must be a pydantic model class, got {config_cls!r}")
        solver_cls.Config = config_cls  # type: ignore[assignment]
    _REGISTRY[solver_cls.name] = solver_cls
    return solver_cls


def names() -> list[str]:
    """Registered solver names, sorted."""
    return sorted(_REGISTRY)


def solver_class(name: str) -> type[Solver]:
    """The class registered as ``name``.

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; expected one of {names()}")
    return _REGISTRY[name]


def parse_config(config: BaseModel | dict[str, Any] | str) -> BaseModel:
    """Validate a solver configuration given as a name, a mapping with ``name`` or a config model.

    A config model instance of a registered solver is re-validated; one of an unregistered
    solver (`SolverConfig` subclass) is returned as is.
    """
    if isinstance(config, BaseModel):
        name = getattr(config, "name", None)
        if name not in _REGISTRY and isinstance(config, SolverConfig):
            return config
        config = config.model_dump()
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a solver configuration needs a 'name' (one of {names()}), got {config!r}")
    return solver_class(config["name"]).Config.model_validate(config)


def get(config: BaseModel | dict[str, Any] | str, **kwargs: Any) -> Solver:
    """Build a registered solver: ``get("inexact-newton", h=0.01)`` or ``get({"name": "exact-jvp", ...})``.

    Examples:
        >>> get("inexact-newton", h=0.01)
        InexactNewton(h=0.01)
    """
    if isinstance(config, str):
        config = {"name": config, **kwargs}
    parsed = parse_config(config)
    return solver_class(parsed.name)(**parsed.model_dump(exclude={"name"}))  # type: ignore[attr-defined]
