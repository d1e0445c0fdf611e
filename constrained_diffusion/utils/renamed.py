"""Options renamed in 0.2, still accepted under their old names for one release, with a `DeprecationWarning`.

========================  =======================  ===========================================
old name                  new name                 what it is
========================  =======================  ===========================================
``lr``                    ``step_scale``           ``lambda``: the correction's step scale, a
                                                   constant or ``(start, end)`` over the inner
                                                   steps (DPS's ``zeta``, FreeDoM's ``rho``)
``step_size``             ``step_rule``            the name of the step-size rule
                                                   (``"dynamic"``, ``"constant"``, ...)
========================  =======================  ===========================================

Every place a user writes an option name (a config field, a keyword, a ``--set`` key such as
``lr.0``, a search-space key, a YAML file) passes its keys through `rename_keys`, which
renames an old key (and its ``.0``/``.1`` ends) once, warns once, and refuses a mix of the
old and the new name of one option.

Examples:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     rename_keys({"lr.0": 0.5, "lr.1": 0.1, "inner_steps": 3})
    {'step_scale.0': 0.5, 'step_scale.1': 0.1, 'inner_steps': 3}
    >>> [str(w.message) for w in caught]
    ["'lr' is deprecated: it is called 'step_scale' since 0.2 (the old name goes in 0.3)"]
    >>> rename_keys({"lr": 0.5, "step_scale": 0.5})
    Traceback (most recent call last):
    ...
    ValueError: both 'lr' (the deprecated name) and 'step_scale' were given; give only 'step_scale'
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pydantic
import pydantic_core

RENAMED: dict[str, str] = {"lr": "step_scale", "step_size": "step_rule"}
"""Old option name -> new option name (renamed in 0.2; the old names are accepted until 0.3)."""


_INTERNAL = tuple(str(d) + os.sep for d in (Path(__file__).resolve().parents[1], Path(pydantic.__file__).parent,
                                               Path(pydantic_core.__file__).parent)) + (argparse.__file__,)
"""Where the library's own frames live: a warning is attributed to the first frame outside them."""


def deprecated(old: str, new: str, where: str = "") -> None:
    """Warn (`DeprecationWarning`) that ``old`` is now called ``new``; ``where`` prefixes the message (``"--set: "``).

    The warning is attributed to the first caller outside this package and pydantic (the user's
    line), so Python's default filters show it in a script's ``__main__`` as they should.
    """
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{where}{old!r} is deprecated: it is called {new!r} since 0.2 (the old name goes in 0.3)",
                  DeprecationWarning, stacklevel=level)


def _head(key: str) -> tuple[str, str]:
    """``"lr.0"`` -> ``("lr", ".0")``; ``"lr"`` -> ``("lr", "")``."""
    head, dot, tail = key.partition(".")
    return head, dot + tail


def rename_keys(data: Mapping[str, Any], fields: Collection[str] | None = None, where: str = "", prefix: str = "") -> dict[str, Any]:
    """``data`` with each old option name (`RENAMED`) replaced by its new name, in place in the key order.

    A key is renamed by its first dotted part, so ``lr.0`` becomes ``step_scale.0``. Each old
    name found warns once.

    Args:
        data: option name -> value (config fields, keyword arguments or overrides).
        fields: where given, the names the receiver knows: an old name is renamed only when its
            new name is one of them and the old name itself is not (a user's correction with an
            option of its own called ``lr`` keeps it).
        where: a prefix for the warnings (``"--set: "``, ``"SamplerConfig: "``).
        prefix: how the keys are spelled in the messages (``"correction."``: ``'correction.lr'``).

    Raises:
        ValueError: the old and the new name of one option both given, naming both.
    """
    renames: dict[str, str] = {}
    for key in data:
        head, rest = _head(key)
        new = RENAMED.get(head)
        if new is None or (fields is not None and (new not in fields or head in fields)):
            continue
        if any(_head(k)[0] == new for k in data):
            old, new = prefix + head, prefix + new
            raise ValueError(f"both {old!r} (the deprecated name) and {new!r} were given; give only {new!r}")
        renames[key] = new + rest
    for head in dict.fromkeys(_head(key)[0] for key in renames):
        deprecated(prefix + head, prefix + RENAMED[head], where)
    return {renames.get(k, k): v for k, v in data.items()} if renames else dict(data)
