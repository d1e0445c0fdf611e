"""The MNIST real-data comparison of solvers (tasks, resumable runner, summary)."""

from constrained_diffusion.evaluation.runner import Settings, evaluate, summarise
from constrained_diffusion.evaluation.tasks import TASKS, make_constraint

__all__ = ["Settings", "TASKS", "evaluate", "make_constraint", "summarise"]
