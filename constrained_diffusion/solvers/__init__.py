"""Solvers: the update direction in ``x_t``-space from an error in ``x0``-space.

Importing this package registers the built-in solvers (each module registers its class).
"""

from constrained_diffusion.solvers.base import DirectionKind, Solver, SolverConfig, vjp_through
from constrained_diffusion.solvers.exact_jvp import ExactJVP, ExactJVPConfig
from constrained_diffusion.solvers.exact_newton import ExactNewton, ExactNewtonConfig, ExactNewtonInfo
from constrained_diffusion.solvers.gradient_descent import GradientDescent, GradientDescentConfig
from constrained_diffusion.solvers.identity import IdentityDirection, IdentityDirectionConfig
from constrained_diffusion.solvers.inexact_newton import InexactNewton, InexactNewtonConfig
from constrained_diffusion.solvers.registry import get, names, parse_config, register, solver_class
from constrained_diffusion.solvers.secant_newton import SecantNewton, SecantNewtonConfig, SecantNewtonInfo

__all__ = [
    "DirectionKind", "ExactJVP", "ExactJVPConfig", "ExactNewton", "ExactNewtonConfig", "ExactNewtonInfo", "GradientDescent",
    "GradientDescentConfig", "IdentityDirection", "IdentityDirectionConfig", "InexactNewton", "InexactNewtonConfig", "SecantNewton", "SecantNewtonConfig",
    "SecantNewtonInfo", "Solver",
    "SolverConfig", "get", "names", "parse_config", "register", "solver_class", "vjp_through",
]
