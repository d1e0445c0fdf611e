"""One meaning per task name: the MNIST tools' tasks are `image_tasks` tasks, and the two names that changed meaning.

Before 0.2 the MNIST tools (``sample --task``, ``adaptive``, ``analyze secant``,
``analyze batch-dependence``, ``compare``) had their own task names: ``box`` was the top half
missing and ``free-form`` the 30% strokes drawn from the digit's held-out position. Since 0.2
every tool builds its problem with `constrained_diffusion.evaluation.image_tasks.make_problem`
and a name means what it means there:

| name before 0.2 | the same task since 0.2 | what the old name means since 0.2 |
|---|---|---|
| ``box`` | ``top-half`` | the centred box (a quarter of the pixels) |
| ``free-form`` | ``mnist-free-form`` | strokes with a seeded hole ratio in [0.2, 0.4] |
| ``sr4`` | ``sr4`` | (unchanged) |

`renamed_task` is what a tool calls on the name a user gave: it keeps the name (one meaning per
name) and warns, once per name in a process (a command that passes the name on to a
library function warns once), when the name is one whose meaning changed.

Records written before 0.2 (the JSON-lines stores of ``adaptive`` and ``analyze secant``) named
their task the old way and carry no `NAMES_FIELD`; `stored_key` and `find_record` keep them
apart from the new meanings and reuse them under the task's new name.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from constrained_diffusion.utils.jsonl_store import JsonlStore

MNIST_TASKS: tuple[str, ...] = ("top-half", "box", "random-box", "mnist-free-form", "free-form", "sr4")
"""The `image_tasks` tasks the MNIST tools offer (the built-in tasks that take a 28x28 or 32x32 digit and no options)."""

RENAMED: dict[str, str] = {"box": "top-half", "free-form": "mnist-free-form"}
"""Old name -> the `image_tasks` name of the task the MNIST tools called so before 0.2."""

OLD_NAME: dict[str, str] = {"top-half": "box", "mnist-free-form": "free-form", "sr4": "sr4"}
"""`image_tasks` name -> the name the MNIST tools' records used for the same task before 0.2."""

NAMES_FIELD = "task_names"
"""The record field that says which names its ``task`` uses: `CURRENT` since 0.2, absent before."""
CURRENT = "image_tasks"

_warned: set[str] = set()


def renamed_task(name: str, option: str) -> str:
    """``name`` unchanged, with a one-time `FutureWarning` when it is ``box`` or ``free-form``, whose meaning changed in 0.2.

    Args:
        name: the task name the user gave.
        option: how the user gave it, for the message (``"--task"``, ``"task="``).

    Returns:
        ``name`` (an `image_tasks` task name: one meaning per name).

    Examples:
        >>> import warnings
        >>> renamed_task("top-half", "--task")
        'top-half'
        >>> _warned.clear()  # (a fresh process)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     renamed_task("box", "--task"), renamed_task("box", "task=")
        ('box', 'box')
        >>> len(caught), caught[0].category.__name__
        (1, 'FutureWarning')
        >>> print(caught[0].message)  # doctest: +NORMALIZE_WHITESPACE
        --task box: since 0.2 'box' is the centred box of evaluate (image_tasks);
        the top-half task these commands called 'box' before is 'top-half'
    """
    if name in RENAMED and name not in _warned:
        _warned.add(name)
        meaning = "the centred box" if name == "box" else "the free-form strokes with a seeded hole ratio"
        warnings.warn(f"{option} {name}: since 0.2 {name!r} is {meaning} of evaluate (image_tasks); the "
                      f"{RENAMED[name]} task these commands called {name!r} before is {RENAMED[name]!r}", FutureWarning, stacklevel=2)
    return name


def stored_key(key: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` (with an `image_tasks` ``task``) as a record written since 0.2 stores it: with ``task_names: image_tasks``.

    Examples:
        >>> stored_key({"task": "box", "digit": 0})
        {'task': 'box', 'digit': 0, 'task_names': 'image_tasks'}
    """
    return {**key, NAMES_FIELD: CURRENT}


def find_record(store: JsonlStore, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of ``key`` (its ``task`` an `image_tasks` name) in ``store``, whose key fields include `NAMES_FIELD`.

    A record written since 0.2 is found by `stored_key`; failing that, one written before 0.2
    under the task's old name (`OLD_NAME`, no `NAMES_FIELD`) is returned with ``task`` set to
    the new name. An old ``box`` record is never the new ``box`` (the centred box).

    Examples:
        >>> import tempfile, pathlib
        >>> store = JsonlStore(pathlib.Path(tempfile.mkdtemp()) / "r.jsonl", ("task", "digit", NAMES_FIELD))
        >>> store.append({"task": "box", "digit": 0, "psnr": 17.0})  # written before 0.2: the top half
        >>> find_record(store, {"task": "top-half", "digit": 0})
        {'task': 'top-half', 'digit': 0, 'psnr': 17.0}
        >>> find_record(store, {"task": "box", "digit": 0}) is None
        True
    """
    found = store.get(store.key(stored_key(key)))
    if found is not None:
        return found
    old = OLD_NAME.get(str(key["task"]))
    if old is None:
        return None
    legacy = store.get(store.key({**key, "task": old, NAMES_FIELD: None}))
    return None if legacy is None else {**legacy, "task": key["task"]}
