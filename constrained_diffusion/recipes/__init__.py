"""Named sampler recipes: the paper's method and the baselines it compares with.

Examples:
    >>> import constrained_diffusion as cd
    >>> cd.recipes.names()  # doctest: +NORMALIZE_WHITESPACE
    ['daps', 'ddnm', 'ddrm', 'diffpir', 'dps', 'flowchef', 'freedom', 'inexact-newton', 'mmps', 'mpgd', 'paper-inpainting',
     'paper-sr8', 'paper-style', 'pigdm', 'psld', 'red-diff', 'repaint']
    >>> cd.recipes.get("dps", steps=50).config.steps
    50
"""

from __future__ import annotations

from typing import Any

from constrained_diffusion.recipes.presets import (
    DPS,
    FREEDOM,
    INEXACT_NEWTON,
    METHODS,
    MPGD,
    PAPER_INPAINTING,
    PAPER_SR8,
    PAPER_STYLE,
    PRESETS,
    PSLD,
)
from constrained_diffusion.recipes.recipe import Recipe, with_timestep_spacing

_RECIPES: dict[str, Recipe] = {r.name: r for r in PRESETS}


def names() -> list[str]:
    """Registered recipe names."""
    return sorted(_RECIPES)


def register(recipe: Recipe, replace: bool = False) -> None:
    """Make ``recipe`` available to `get` and to the CLI's ``--recipe``.

    Raises:
        ValueError: the name is taken and ``replace`` is false.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    if recipe.name in _RECIPES and not replace:
        raise ValueError(f"a recipe named {recipe.name!r} exists; pass replace=True to replace it")
    _RECIPES[recipe.name] = recipe


def get(name: str, **overrides: Any) -> Recipe:
    """The recipe called ``name``, with optional `SamplerConfig` or option overrides
    (``get("psld", gamma=0.5)``).

    Raises:
        ValueError: unknown name (lists the known ones).
        pydantic.ValidationError: an invalid override, naming the field.
    """
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {names()}")
    recipe = _RECIPES[name]
    return recipe.with_config(**overrides) if overrides else recipe


__all__ = ["METHODS", "DPS", "FREEDOM", "INEXACT_NEWTON", "MPGD", "PAPER_INPAINTING", "PAPER_SR8", "PAPER_STYLE", "PSLD", "Recipe", "get", "names",
           "register", "with_timestep_spacing"]
