"""Search spaces: the hyper-parameters a method declares as tunable, and their ranges.

Plain data of the library's ground: each method declares its own space next to its definition,
never in a central table. A `Solver` subclass sets the class attribute ``search_space`` (its own
options, e.g. inexact Newton's ``h``) and a `Recipe` its field ``search_space`` (the loop's
options: the step-size schedule, the inner steps, DPS's zeta, ...). The tuning layer
(`constrained_diffusion.tuning`) reads them; nothing here imports it.

A key is an override of the method in the override language
(`constrained_diffusion.recipes.overrides`): ``inner_steps``, ``solver.h``, PSLD's ``gamma``;
``KEY.0`` / ``KEY.1`` are the two ends of a pair such as the step schedule
``step_scale = (start, end)`` (``lr`` before 0.2).

Examples:
    >>> space = SearchSpace({"step_scale.0": Float(0.01, 2.0, log=True), "step_scale.1": Float(0.01, 2.0, log=True),
    ...                      "inner_steps": Int(1, 5)})
    >>> print(space.describe())
    step_scale.0: float in [0.01, 2] (log); step_scale.1: float in [0.01, 2] (log); inner_steps: int in [1, 5]
    >>> space.without(["inner_steps"]).keys()
    ('step_scale.0', 'step_scale.1')
    >>> space.without(["lr"]).keys()  # a name renamed in 0.2 fixes its new name (the override warns when applied)
    ('inner_steps',)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from constrained_diffusion.utils.renamed import RENAMED


class _Trial(Protocol):  # the part of optuna.Trial a space uses
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = ...) -> float: ...
    def suggest_int(self, name: str, low: int, high: int, *, log: bool = ...) -> int: ...
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class Float:
    """A real parameter in ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Float needs low < high, got [{self.low}, {self.high}]")
        if self.log and not self.low > 0:
            raise ValueError(f"Float(log=True) needs low > 0, got {self.low}")

    def suggest(self, trial: _Trial, name: str) -> float:
        """Draw the value from ``trial``."""
        return float(trial.suggest_float(name, self.low, self.high, log=self.log))

    def __str__(self) -> str:
        return f"float in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Int:
    """An integer parameter in ``[low, high]`` (both included)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Int needs low <= high, got [{self.low}, {self.high}]")

    def suggest(self, trial: _Trial, name: str) -> int:
        """Draw the value from ``trial``."""
        return int(trial.suggest_int(name, self.low, self.high, log=self.log))

    def __str__(self) -> str:
        return f"int in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (JSON-like values: numbers, strings, booleans, ``None``)."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError("Choice needs at least one choice")

    def suggest(self, trial: _Trial, name: str) -> Any:
        """Draw the value from ``trial``."""
        return trial.suggest_categorical(name, list(self.choices))

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))


Param = Float | Int | Choice


class SearchSpace(Mapping[str, Param]):
    """Named parameters, in order: override key -> `Float`, `Int` or `Choice`.

    Args:
        params: the parameters; keys are method overrides, ``KEY.0`` / ``KEY.1`` the ends of a
            pair-valued override.
    """

    def __init__(self, params: Mapping[str, Param] | None = None) -> None:
        self._params: dict[str, Param] = dict(params or {})
        for key, param in self._params.items():
            if not isinstance(param, (Float, Int, Choice)):
                raise TypeError(f"search space {key!r}: expected Float, Int or Choice, got {param!r}")

    def __getitem__(self, key: str) -> Param:
        return self._params[key]

    def __iter__(self):  # noqa: ANN204 - Mapping's signature
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"SearchSpace({self._params!r})"

    def keys(self) -> tuple[str, ...]:  # type: ignore[override]
        """The parameter names, in order."""
        return tuple(self._params)

    def __or__(self, other: Mapping[str, Param]) -> SearchSpace:
        return SearchSpace({**self._params, **dict(other)})

    def prefixed(self, prefix: str) -> SearchSpace:
        """The same parameters with ``prefix`` before each key (``"solver."`` for a solver's own options)."""
        return SearchSpace({f"{prefix}{k}": v for k, v in self._params.items()})

    def without(self, keys: Iterable[str]) -> SearchSpace:
        """The parameters not fixed by ``keys`` (a key ``step_scale`` also removes ``step_scale.0`` and
        ``step_scale.1``; an old name of `constrained_diffusion.utils.renamed.RENAMED`, ``lr``, counts as its new one)."""
        fixed = {_renamed(k) for k in keys}
        return SearchSpace({k: v for k, v in self._params.items() if k not in fixed and k.rsplit(".", 1)[0] not in fixed})

    def suggest(self, trial: _Trial) -> dict[str, Any]:
        """Sample every parameter from an Optuna ``trial``; returns the raw values by key."""
        return {key: param.suggest(trial, key) for key, param in self._params.items()}

    def describe(self) -> str:
        """One line: ``key: range; ...`` (``"(none)"`` for an empty space)."""
        return "; ".join(f"{k}: {v}" for k, v in self._params.items()) or "(none)"


EMPTY = SearchSpace()


def _renamed(key: str) -> str:
    """``key`` with an old option name (`RENAMED`) in its first or ``correction.`` part replaced, silently."""
    parts = key.split(".")
    i = 1 if parts[0] == "correction" and len(parts) > 1 else 0
    parts[i] = RENAMED.get(parts[i], parts[i])
    return ".".join(parts)
"""The space of a method with nothing to tune."""


__all__ = ["EMPTY", "Choice", "Float", "Int", "Param", "SearchSpace"]
