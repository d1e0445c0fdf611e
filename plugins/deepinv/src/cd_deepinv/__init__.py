"""deepinv's forward operators as ``constrained_diffusion`` constraints (entry point ``deepinv``).

``PhysicsConstraint(physics, y)`` turns a ``deepinv.physics.LinearPhysics`` into a
``cd.LinearConstraint`` (``forward = physics.A``, ``adjoint = physics.A_adjoint``) and any
other ``deepinv.physics.Physics`` into a ``cd.NonlinearConstraint`` on ``||y - A(x)||^2``.
"""

from cd_deepinv.factory import FILTERS, build_physics, load_physics_constraint
from cd_deepinv.physics import (
    LinearPhysicsConstraint,
    NonlinearPhysicsConstraint,
    PhysicsConstraint,
    PhysicsConstraintConfig,
    observe,
    physics_dtype,
    physics_noise_std,
)

__all__ = [
    "FILTERS",
    "LinearPhysicsConstraint",
    "NonlinearPhysicsConstraint",
    "PhysicsConstraint",
    "PhysicsConstraintConfig",
    "build_physics",
    "load_physics_constraint",
    "observe",
    "physics_dtype",
    "physics_noise_std",
]
__version__ = "0.1.0"
