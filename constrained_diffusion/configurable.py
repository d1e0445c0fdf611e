"""Classes whose options are one pydantic model: a generic ``__init__`` and ``__repr__``.

A solver or a correction declares its options once, as a pydantic model assigned to the class
attribute ``Config``; `Configurable.__init__` validates the given options against it (unknown
or invalid ones raise `pydantic.ValidationError`, naming the field), keeps the validated model
as ``self.config`` and sets every option as an attribute. ``__repr__`` prints the options.

Examples:
    >>> from pydantic import BaseModel, Field
    >>> class Blur(Configurable):
    ...     class Config(BaseModel):
    ...         sigma: float = Field(1.0, gt=0)
    ...         size: int = 5
    >>> Blur(2.0)
    Blur(sigma=2.0, size=5)
    >>> Blur(size=3).size
    3
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel


class Configurable:
    """Mixin: options validated by ``Config``, exposed as attributes and printed by ``repr``.

    Args:
        *args: options by position, in the order ``Config`` declares them.
        **options: options by name.

    Raises:
        TypeError: more positional options than fields, or one given twice.
        pydantic.ValidationError: an invalid or unknown option, naming it.
    """

    Config: ClassVar[type[BaseModel]]
    _fixed_fields: ClassVar[tuple[str, ...]] = ()  # filled in by the class, not by the caller

    def __init__(self, *args: Any, **options: Any) -> None:
        fields = self._option_names()
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(fields)} positional options ({', '.join(fields)})")
        for field, value in zip(fields, args):
            if field in options:
                raise TypeError(f"{type(self).__name__} got {field!r} by position and by name")
            options[field] = value
        fixed = {f: getattr(type(self), f) for f in self._fixed_fields if f in self.Config.model_fields}
        self.config = self.Config(**fixed, **options)
        for field in fields:
            if not isinstance(getattr(type(self), field, None), property):  # a property reads self.config itself
                setattr(self, field, getattr(self.config, field))

    @classmethod
    def _option_names(cls) -> list[str]:
        return [f for f in cls.Config.model_fields if f not in cls._fixed_fields]

    def __repr__(self) -> str:
        opts = ", ".join(f"{f}={getattr(self.config, f)!r}" for f in self._option_names())
        return f"{type(self).__name__}({opts})"
