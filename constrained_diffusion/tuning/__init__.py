"""Hyper-parameter search: search spaces declared by each method, and the ``tune`` study runner.

`space` (no optional dependency) holds `SearchSpace` and its parameter types; `tuner` runs an
Optuna study (``pip install 'constrained_diffusion[tune]'``) and is imported on use.
"""

from constrained_diffusion.tuning.space import EMPTY, Choice, Float, Int, SearchSpace, method_space

__all__ = ["EMPTY", "Choice", "Float", "Int", "SearchSpace", "method_space"]
