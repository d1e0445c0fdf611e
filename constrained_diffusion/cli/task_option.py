"""The ``--task`` / ``--tasks`` option of the MNIST tools (``sample``, ``adaptive``, ``analyze secant``, ``analyze batch-dependence``).

A task is an `image_tasks` task of `constrained_diffusion.evaluation.task_names.MNIST_TASKS`
(one meaning per name: ``box`` is the centred box, ``top-half`` what these commands called
``box`` before 0.2). The name table is read when an argument is parsed, not when the parser is
built, so ``--help`` imports no torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

TASK_HELP = "an image_tasks task: top-half, box (the centred box), random-box, mnist-free-form, free-form or sr4"
"""The option's help (the names of `task_names.MNIST_TASKS`, written out so that ``--help`` imports nothing)."""


def mnist_task(option: str) -> Callable[[str], str]:
    """An argparse type for ``option``: a name of `task_names.MNIST_TASKS`; ``box``/``free-form`` warn once (`renamed_task`).

    Examples:
        >>> mnist_task("--task")("top-half")
        'top-half'
    """

    def parse(text: str) -> str:
        from constrained_diffusion.evaluation.task_names import MNIST_TASKS, renamed_task

        if text not in MNIST_TASKS:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(MNIST_TASKS)}, got {text!r}")
        return renamed_task(text, option)

    parse.__name__ = "task name"
    return parse
