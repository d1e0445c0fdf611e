"""The evaluation layer: the harness (`Evaluation`: any model, image set, task and methods; sharded,
resumable), the MNIST comparison of solvers run on it (`Comparison`), the adaptive study and the model cards.

The modules (and so torch) are imported lazily, as ``from constrained_diffusion.evaluation.harness import
Evaluation``; ``constrained_diffusion.evaluation.Evaluation`` and ``.Comparison`` also work.
The names of the comparison's own loop (``runner``, ``tasks``), which ``compare`` ran before
it became a configuration of the harness in 0.2, still import from here for one release,
with a `DeprecationWarning` naming their replacement.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_LAZY = {"Comparison": "comparison", "Evaluation": "harness", "EvaluationConfig": "config", "read_digits": "digits"}
"""Public names imported on first use (module of this package)."""

DEPRECATED: dict[str, tuple[str, str]] = {
    **{name: ("runner", "constrained_diffusion.evaluation.comparison.Comparison (compare runs on the harness)")
       for name in ("KEY_FIELDS", "Settings", "evaluate", "ordered", "results_store", "summarise")},
    "PRECISIONS": ("runner", "constrained_diffusion.utils.precision.PRECISIONS"),
    "precision_context": ("runner", "constrained_diffusion.utils.precision.precision_context([m.network for m in models], precision)"),
    "TASKS": ("tasks", "constrained_diffusion.evaluation.task_names.MNIST_TASKS"),
    "make_constraint": ("tasks", "constrained_diffusion.evaluation.image_tasks.make_problem(...).constraint"),
}
"""Name -> (its module here, what replaces it); each warns on use and goes in 0.3."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    if name in DEPRECATED:
        module, replacement = DEPRECATED[name]
        warnings.warn(f"constrained_diffusion.evaluation.{name} is deprecated since 0.2 and goes in 0.3; use {replacement}",
                      DeprecationWarning, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the module's own warning: one is enough
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Comparison", "Evaluation", "EvaluationConfig", "read_digits"]
