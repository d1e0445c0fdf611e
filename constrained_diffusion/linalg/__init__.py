"""Numerical kernels, one copy each: finite-difference JVPs, Arnoldi, GMRES, the dense Jacobian,
the pseudo-inverse, per-sample reductions and the half-precision upcast.

Solvers, step-size rules, constraints and the analysis all call these; none keeps its own copy.
"""

from constrained_diffusion.linalg.arnoldi import ArnoldiResult, arnoldi, gram_schmidt, largest_eigenvalue
from constrained_diffusion.linalg.finite_difference import H_ENCODER, H_PAPER, default_h, fd_jvp, fd_step, resolve_h, tf32_active, unit_roundoff
from constrained_diffusion.linalg.gmres import GMRESResult, gmres
from constrained_diffusion.linalg.jacobian import dense_jacobian
from constrained_diffusion.linalg.pinv import pinv_solve
from constrained_diffusion.linalg.precision import HALF_DTYPES, upcast
from constrained_diffusion.linalg.reductions import max_abs, per_sample, safe_ratio

__all__ = [
    "H_ENCODER", "H_PAPER", "HALF_DTYPES", "default_h", "resolve_h", "tf32_active", "unit_roundoff",
    "ArnoldiResult", "GMRESResult", "arnoldi", "dense_jacobian", "fd_jvp", "fd_step", "gmres", "gram_schmidt",
    "largest_eigenvalue", "max_abs", "per_sample", "pinv_solve", "safe_ratio", "upcast",
]
