"""The evaluation harness (`Evaluation`: any model, image set, task and methods; sharded, resumable), the MNIST
comparison of solvers (tasks, resumable runner, summary), the adaptive study and the model cards.

The harness's modules (``harness``, ``image_tasks``, ``scores``, ``report``) are imported
lazily, as ``from constrained_diffusion.evaluation.harness import Evaluation``.
"""

from constrained_diffusion.evaluation.digits import read_digits
from constrained_diffusion.evaluation.runner import (
    KEY_FIELDS,
    PRECISIONS,
    Settings,
    evaluate,
    ordered,
    precision_context,
    results_store,
    summarise,
)
from constrained_diffusion.evaluation.tasks import TASKS, make_constraint

__all__ = [
    "KEY_FIELDS", "PRECISIONS", "Settings", "TASKS", "evaluate", "make_constraint", "ordered", "precision_context",
    "read_digits", "results_store", "summarise",
]
