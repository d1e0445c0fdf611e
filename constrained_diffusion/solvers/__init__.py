"""Solvers: the update direction in ``x_t``-space from an error in ``x0``-space."""

from constrained_diffusion.solvers.base import Solver
from constrained_diffusion.solvers.exact_jvp import ExactJVP, ExactJVPConfig
from constrained_diffusion.solvers.exact_newton import ExactNewton, ExactNewtonConfig
from constrained_diffusion.solvers.gradient_descent import GradientDescent, GradientDescentConfig
from constrained_diffusion.solvers.identity import IdentityDirection, IdentityDirectionConfig
from constrained_diffusion.solvers.inexact_newton import InexactNewton, InexactNewtonConfig
from constrained_diffusion.solvers.registry import get, names, register

__all__ = [
    "ExactJVP", "ExactJVPConfig", "ExactNewton", "ExactNewtonConfig", "GradientDescent", "GradientDescentConfig", "IdentityDirection",
    "IdentityDirectionConfig", "InexactNewton",
    "InexactNewtonConfig", "Solver", "get", "names", "register",
]
