"""A method's whole search space: its recipe's, joined with its solver's.

The parameter types (`Float`, `Int`, `Choice`) and `SearchSpace` live in the library's ground,
`constrained_diffusion.space`, where solvers and recipes declare their spaces; they are
re-exported here. `method_space` joins the two for a method name the way the override
language builds the method (`constrained_diffusion.recipes.overrides.resolve_recipe`): the
recipe's keys as they are, the solver's under ``solver.``.

Examples:
    >>> method_space("inexact-newton").keys()
    ('step_scale.0', 'step_scale.1', 'inner_steps', 'solver.h')
    >>> method_space("dps").keys()
    ('step_scale',)
"""

from __future__ import annotations

from constrained_diffusion.recipes.overrides import base_recipe, solver_of
from constrained_diffusion.solvers import registry
from constrained_diffusion.space import EMPTY, Choice, Float, Int, Param, SearchSpace

__all__ = ["EMPTY", "Choice", "Float", "Int", "Param", "SearchSpace", "method_space"]


def method_space(name: str) -> SearchSpace:
    """The search space of method ``name``: its recipe's, then its solver's options under ``solver.``.

    A solver name means the paper's loop (the ``inexact-newton`` recipe) with that solver, as
    for ``evaluate --method``.

    Raises:
        ValueError: an unknown method.
    """
    space = SearchSpace(base_recipe(name).search_space)
    solver = solver_of(name)
    if solver is not None:
        space = space | SearchSpace(getattr(registry.solver_class(solver), "search_space", EMPTY)).prefixed("solver.")
    return space
