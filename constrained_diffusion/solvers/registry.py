"""Solvers by name, so that configuration files and the CLI can pick one.

A third-party solver registers itself with `register` (a pydantic config class whose
``name`` field is a ``Literal`` of the solver's name, and the solver class that accepts the
config's other fields as keyword arguments).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from constrained_diffusion.solvers.base import Solver
from constrained_diffusion.solvers.exact_jvp import ExactJVP, ExactJVPConfig
from constrained_diffusion.solvers.exact_newton import ExactNewton, ExactNewtonConfig
from constrained_diffusion.solvers.gradient_descent import GradientDescent, GradientDescentConfig
from constrained_diffusion.solvers.identity import IdentityDirection, IdentityDirectionConfig
from constrained_diffusion.solvers.inexact_newton import InexactNewton, InexactNewtonConfig

_REGISTRY: dict[str, tuple[type[Solver], type[BaseModel]]] = {}


def register(solver_cls: type[Solver], config_cls: type[BaseModel]) -> None:
    """Make ``solver_cls`` available under ``solver_cls.name``."""
    _REGISTRY[solver_cls.name] = (solver_cls, config_cls)


def names() -> list[str]:
    """Registered solver names."""
    return sorted(_REGISTRY)


def parse_config(config: BaseModel | dict[str, Any] | str) -> BaseModel:
    """Validate a solver configuration given as a name, a mapping with ``name`` or a config model."""
    if isinstance(config, str):
        config = {"name": config}
    if isinstance(config, BaseModel):
        config = config.model_dump()
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a solver configuration needs a 'name' (one of {names()}), got {config!r}")
    name = config["name"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown solver {name!r}; expected one of {names()}")
    return _REGISTRY[name][1].model_validate(config)


def get(config: BaseModel | dict[str, Any] | str, **kwargs: Any) -> Solver:
    """Build a solver: ``get("inexact-newton", h=0.01)`` or ``get({"name": "exact-jvp", ...})``."""
    if isinstance(config, str):
        config = {"name": config, **kwargs}
    parsed = parse_config(config)
    solver_cls = _REGISTRY[parsed.name][0]  # type: ignore[attr-defined]
    return solver_cls(**parsed.model_dump(exclude={"name"}))


for _cls, _cfg in ((InexactNewton, InexactNewtonConfig), (GradientDescent, GradientDescentConfig), (ExactJVP, ExactJVPConfig),
                   (ExactNewton, ExactNewtonConfig), (IdentityDirection, IdentityDirectionConfig)):
    register(_cls, _cfg)
