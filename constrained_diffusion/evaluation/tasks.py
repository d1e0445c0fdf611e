"""Deprecated since 0.2 (goes in 0.3): the MNIST comparison's task names of 0.1, where ``box`` meant the top half.

Every tool now names its tasks as `constrained_diffusion.evaluation.image_tasks` does (one
meaning per name; `constrained_diffusion.evaluation.task_names`); build a constraint with
``make_problem(task, images, ids, seed).constraint``.

The MNIST comparison's tasks (``constrained-diffusion compare`` before 0.2), by their names there, built by the harness's task module.

Each name is one task of `constrained_diffusion.evaluation.image_tasks` (the one task module):

* ``"box"`` — the top half of the image is missing: ``top-half`` (the harness's ``box`` is the
  centred box, another task);
* ``"free-form"`` — random brush strokes hide 30% of the image (one seeded mask per digit):
  ``mnist-free-form`` (the harness's ``free-form`` draws the hole ratio and seeds by image id);
* ``"sr4"`` — x4 super-resolution from a 8x8 bicubic (antialiased) down-sampling: ``sr4``.

The constraints are those ``compare`` always built, bit for bit, so its tables stay reproducible.
"""

from __future__ import annotations

import warnings
from typing import Literal

from torch import Tensor

from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.evaluation.image_tasks import make_problem

warnings.warn("constrained_diffusion.evaluation.tasks is deprecated since 0.2 and goes in 0.3: tasks are named as "
              "constrained_diffusion.evaluation.image_tasks names them ('box' is the centred box; the old box is 'top-half')",
              DeprecationWarning, stacklevel=2)

Task = Literal["box", "free-form", "sr4"]
TASKS: tuple[Task, ...] = ("box", "free-form", "sr4")

HARNESS_TASK: dict[str, str] = {"box": "top-half", "free-form": "mnist-free-form", "sr4": "sr4"}
"""The `image_tasks` name of each comparison task: what ``evaluate --task`` calls it."""


def make_constraint(task: Task, images: Tensor, first_index: int = 0, seed: int = 0) -> Constraint:
    """The constraint of ``task`` for clean ``images`` ``(B, 1, H, W)``: ``make_problem(HARNESS_TASK[task], ...)``.

    ``first_index`` is the position of ``images[0]`` in the test set (the ids are the positions
    ``first_index``, ``first_index + 1``, ...), so that digit ``i`` always gets the same
    free-form mask however the set is batched. The constraint lives on ``images.device`` (the
    masks are drawn on the CPU, so every device gets the same ones).

    Examples:
        >>> import torch
        >>> c = make_constraint("box", torch.zeros(2, 1, 8, 8))
        >>> c.mask[0, 0, :, 0].tolist()
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    ids = [str(first_index + i) for i in range(images.shape[0])]
    return make_problem(HARNESS_TASK[task], images, ids, seed).constraint
