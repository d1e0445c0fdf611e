"""The override language: how a user's ``KEY=VALUE`` settings and a method name become a `Recipe`.

Every front end speaks it: ``evaluate --method NAME --set ...`` and its YAML ``set:``, ``tune``
(whose search-space keys are overrides), ``sample --recipe/--solver``. One module owns its rules:

* a **method name** is a recipe (``cd.recipes.names()``) or a solver (``cd.solvers.names()``),
  the latter meaning the paper's loop (the ``inexact-newton`` recipe) with that solver
  (`base_recipe`);
* ``KEY=VALUE``: the value is JSON where it parses, the string itself otherwise (`parse_value`);
  ``LABEL:KEY=VALUE`` applies to one method of a run, ``task.KEY=VALUE`` is a task option
  (`split_set`);
* a **dotted key** nests: ``solver.h=0.01`` changes the solver's ``h`` (`nest`);
* ``KEY.0`` / ``KEY.1`` are the two ends of a pair such as the step schedule ``step_scale =
  (start, end)``, given together (`join_pairs`);
* the names renamed in 0.2 (``lr`` -> ``step_scale``, ``step_size`` -> ``step_rule``, with their
  ``.0``/``.1`` ends and ``correction.`` forms) still work, with a `DeprecationWarning`
  (`apply_overrides`).

Examples:
    >>> split_set(["inner_steps=3", "dps:steps=100", "task.hole_ratio=[0.1,0.3]"])
    ({'inner_steps': 3}, {'dps': {'steps': 100}}, {'hole_ratio': [0.1, 0.3]})
    >>> join_pairs({"step_scale.0": 0.5, "step_scale.1": 0.1, "inner_steps": 3})
    {'inner_steps': 3, 'step_scale': (0.5, 0.1)}
    >>> recipe = resolve_recipe("exact-jvp", {"inner_steps": 2, "solver.method": "double-backward"})
    >>> recipe.config.inner_steps, recipe.config.solver.name, recipe.config.solver.method
    (2, 'exact-jvp', 'double-backward')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from constrained_diffusion.recipes import Recipe, get, names
from constrained_diffusion.recipes.recipe import renamed_overrides
from constrained_diffusion.solvers import registry as solver_registry

__all__ = ["apply_overrides", "base_recipe", "join_pairs", "method_names", "nest", "paper_loop", "parse_value", "resolve_recipe", "solver_of",
           "split_set"]


def parse_value(text: str) -> Any:
    """A ``VALUE`` of ``KEY=VALUE``: JSON where it parses (numbers, lists, ``true``, ``null``), else the string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_set(items: list[str] | Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """``--set`` items -> (overrides of every method, per-method overrides by label, task options).

    ``KEY=VALUE`` applies to every method; ``LABEL:KEY=VALUE`` to one method; ``task.KEY=VALUE``
    is a task option. Values are JSON where they parse, strings otherwise (`parse_value`); a
    mapping (a YAML ``set:``) is read with the same rules, its values as they are.

    Raises:
        ValueError: an item without ``=`` or without a key.
    """
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--set must be KEY=VALUE, LABEL:KEY=VALUE or task.KEY=VALUE, got {item!r}")
            pairs.append((key, parse_value(value)))
    common: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    task: dict[str, Any] = {}
    for key, value in pairs:
        if key.startswith("task."):
            task[key[5:]] = value
        elif ":" in key:
            label, _, k = key.partition(":")
            per.setdefault(label, {})[k] = value
        else:
            common[key] = value
    return common, per, task


def join_pairs(values: Mapping[str, Any]) -> dict[str, Any]:
    """``KEY.0`` and ``KEY.1`` become the pair ``KEY = (v0, v1)``; other keys pass unchanged (pairs last).

    Raises:
        ValueError: one end of a pair without the other.
    """
    out: dict[str, Any] = {}
    ends: dict[str, dict[int, Any]] = {}
    for key, value in values.items():
        head, dot, tail = key.rpartition(".")
        if dot and tail in ("0", "1"):
            ends.setdefault(head, {})[int(tail)] = value
        else:
            out[key] = value
    for head, pair in ends.items():
        if set(pair) != {0, 1}:
            raise ValueError(f"{head}.0 and {head}.1 go together, got only {head}.{next(iter(pair))}")
        out[head] = (pair[0], pair[1])
    return out


def nest(overrides: Mapping[str, Any], current: Mapping[str, Any], method: str = "") -> dict[str, Any]:
    """Dotted keys merged into the nested value they name: ``{"solver.h": 0.01}`` -> ``{"solver": {..., "h": 0.01}}``.

    Args:
        overrides: the (pair-joined) overrides.
        current: the values the nested keys start from (the recipe's config, dumped).
        method: the method's name, for the error message.

    Raises:
        ValueError: ``HEAD.KEY`` where ``HEAD`` is not a nested option.
    """
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        head, dot, tail = key.partition(".")
        if dot and head == "correction":  # Recipe.with_config owns these: correction.name switches, the rest nest
            flat[key] = value
        elif dot:
            inner = flat.get(head, current.get(head))
            if not isinstance(inner, Mapping):
                raise ValueError(f"--set {key}: {head!r} is not a nested option of method {method!r}")
            flat[head] = {**inner, tail: value}
        else:
            flat[key] = value
    return flat


def method_names() -> list[str]:
    """Every method name: the recipes, then the solvers (each with the paper's loop)."""
    return [*names(), *solver_registry.names()]


def solver_of(name: str) -> str | None:
    """The solver a method calls: its recipe's (``None`` for one that calls none) or the solver ``name`` itself.

    Raises:
        ValueError: an unknown method (listing recipes and solvers).
    """
    if name in names():
        solver = get(name).config.solver
        return None if solver is None else solver.name  # type: ignore[attr-defined]
    _check_method(name)
    return name


def paper_loop(solver: str) -> Recipe:
    """The paper's loop (the ``inexact-newton`` recipe) with the solver ``solver`` at its own defaults.

    Raises:
        ValueError: an unknown solver (listing the solvers).
    """
    solver_registry.solver_class(solver)  # the error names the known solvers
    return get("inexact-newton", solver={"name": solver})


def base_recipe(name: str) -> Recipe:
    """The recipe ``name``, or the paper's loop with the solver ``name`` (`paper_loop`).

    Raises:
        ValueError: an unknown method (listing recipes and solvers).
    """
    if name in names():
        return get(name)
    _check_method(name)
    return paper_loop(name)


def apply_overrides(recipe: Recipe, overrides: Mapping[str, Any], method: str | None = None, flag: str = "--set") -> Recipe:
    """``recipe`` with ``overrides`` applied: old names renamed, pairs joined, dotted keys nested, then `Recipe.with_config`.

    An option name renamed in 0.2 (``lr``, ``lr.0``, ``step_size``, ``correction.lr``, ...) is
    replaced by its new name with one `DeprecationWarning` naming ``flag``.

    Args:
        recipe: the method's recipe.
        overrides: override key -> value.
        method: the method's name in messages (default: the recipe's).
        flag: the option the overrides came from, in messages.

    Raises:
        ValueError: an invalid override, naming ``flag``, the method and the field.
    """
    name = recipe.name if method is None else method
    try:
        overrides = renamed_overrides(recipe.config, overrides, f"{flag}: ")
    except ValueError as exc:
        raise ValueError(f"{flag} for method {name!r}: {exc}") from None
    flat = nest(join_pairs(overrides), recipe.config.model_dump(), name)
    try:
        return recipe.with_config(**flat) if flat else recipe
    except ValueError as exc:  # pydantic's ValidationError is a ValueError: name the method
        errors = exc.errors() if hasattr(exc, "errors") else None
        detail = "; ".join((f"{e['loc'][0]}: " if e["loc"] else "") + e["msg"] for e in errors) if errors else str(exc).splitlines()[0]
        raise ValueError(f"{flag} for method {name!r}: {detail}") from None


def resolve_recipe(name: str, overrides: Mapping[str, Any]) -> Recipe:
    """The method ``name`` (`base_recipe`) with ``overrides`` applied (`apply_overrides`).

    Raises:
        ValueError: an unknown name (listing recipes and solvers) or an invalid override, naming the method.
    """
    return apply_overrides(base_recipe(name), overrides, name)


def _check_method(name: str) -> None:
    if name not in solver_registry.names():
        raise ValueError(f"--method: unknown method {name!r}; expected a recipe ({', '.join(names())}) "
                         f"or a solver ({', '.join(solver_registry.names())})")
