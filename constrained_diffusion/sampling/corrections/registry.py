"""Corrections by name, so that a recipe, a YAML config, ``--set`` and the CLI can pick one.

Registering is one decorator on the class (its ``Config`` is read from it)::

    @register_correction("my-correction")
    class MyCorrection(Correction):
        ...

A registered correction is named in a configuration as one nested value,
``correction: {name: my-correction, **options}`` (`CorrectionSpec`); the options are validated
by the class's own ``Config``. The sampler itself never needs the registry:
``ConstrainedSampler(model, correction=MyCorrection())`` uses the instance as given.

Examples:
    >>> import constrained_diffusion as cd
    >>> "inner-loop" in cd.sampling.correction_names()
    True
    >>> cd.sampling.get_correction("post-step", step_scale=0.5)
    PostStep(step_scale=0.5, step_rule='residual', inner_steps=1)
    >>> cd.sampling.get_correction({"name": "time-travel", "inner": {"name": "post-step"}, "repeats": 2}).repeats
    2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator

from constrained_diffusion.sampling.corrections.base import Correction
from constrained_diffusion.utils.renamed import rename_keys

C = TypeVar("C", bound=type[Correction])

_REGISTRY: dict[str, type[Correction]] = {}


def register(correction_cls: C, name: str | None = None) -> C:
    """Make ``correction_cls`` available under ``name`` (default: its ``name`` attribute).

    Raises:
        TypeError: not a `Correction` subclass.
        ValueError: an empty name.
    """
    if not (isinstance(correction_cls, type) and issubclass(correction_cls, Correction)):
        raise TypeError(f"register_correction needs a Correction subclass, got {correction_cls!r}")
    name = correction_cls.name if name is None else name
    if not isinstance(name, str) or not name:
        raise ValueError(f"a correction's registry name must be a non-empty string, got {name!r}")
    correction_cls.name = name
    _REGISTRY[name] = correction_cls
    return correction_cls


def register_correction(name: str | type[Correction]) -> Any:
    """Class decorator: ``@register_correction("name")`` (or bare ``@register_correction``, using the class's ``name``).

    Examples:
        >>> import constrained_diffusion as cd
        >>> @cd.sampling.register_correction("plain")
        ... class Plain(cd.sampling.Correction):
        ...     uses_solver = False
        ...     def apply(self, step, x_t):
        ...         x_t, x0 = step.evaluate(x_t)
        ...         r = step.constraint.residual(x0)
        ...         return cd.sampling.CorrectionResult(step.update(x_t, x0), x0, r.expand(2, -1))
        >>> cd.sampling.correction_class("plain") is Plain
        True
    """
    if isinstance(name, type):
        return register(name)

    def decorate(correction_cls: C) -> C:
        return register(correction_cls, name)  # type: ignore[arg-type]

    return decorate


def names() -> list[str]:
    """Registered correction names, sorted."""
    return sorted(_REGISTRY)


def correction_class(name: str) -> type[Correction]:
    """The class registered as ``name``.

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown correction {name!r}; expected one of {names()}")
    return _REGISTRY[name]


class CorrectionSpec(BaseModel):
    """A correction named in a configuration: ``{name: <registered>, **options}``.

    The options are those of the registered class's ``Config`` and are validated by it (errors
    name the option); they are kept as given, so ``model_dump`` round-trips. A bare string is
    the name with default options.

    Attributes:
        name: a registered correction (`names`).
    """

    model_config = ConfigDict(extra="allow")
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and "name" not in data:
            raise ValueError(f"a correction configuration needs a 'name' (one of {names()}), got {data!r}")
        if isinstance(data, dict) and data["name"] in _REGISTRY:  # the options renamed in 0.2, renamed once here
            data = rename_keys(data, _REGISTRY[data["name"]].Config.model_fields, "correction: ")
        return data

    @model_validator(mode="after")
    def _options_valid(self) -> CorrectionSpec:
        correction_class(self.name).Config.model_validate(self.options)
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The options as given (without ``name``)."""
        return dict(self.model_extra or {})

    @property
    def cls(self) -> type[Correction]:
        """The registered class."""
        return correction_class(self.name)

    def build(self) -> Correction:
        """The `Correction` this spec names, with its options."""
        return self.cls(**self.options)


def parse_config(config: CorrectionSpec | dict[str, Any] | str) -> CorrectionSpec:
    """Validate a correction configuration given as a name, a mapping with ``name`` or a `CorrectionSpec`."""
    if isinstance(config, CorrectionSpec):
        return config
    return CorrectionSpec.model_validate(config)


def get(config: CorrectionSpec | dict[str, Any] | str, **kwargs: Any) -> Correction:
    """Build a registered correction: ``get("inner-loop", inner_steps=3)`` or ``get({"name": "ddnm"})``."""
    if isinstance(config, str):
        config = {"name": config, **kwargs}
    return parse_config(config).build()


def build_inner(value: Any) -> Any:
    """A correction given by configuration (name or mapping) as an instance; anything else unchanged."""
    if isinstance(value, (str, dict, CorrectionSpec)):
        return get(value)
    return value


Decorator = Callable[[C], C]
