"""deepinv's forward operators as ``constrained_diffusion`` constraints (entry point ``deepinv``).

``PhysicsConstraint(physics, y)`` turns a ``deepinv.physics.LinearPhysics`` into a
``cd.LinearConstraint`` (``forward = physics.A``, ``adjoint = physics.A_adjoint``) and any
other ``deepinv.physics.Physics`` into a ``cd.NonlinearConstraint`` on ``||y - A(x)||^2``; a
``DecomposablePhysics``' constraint has ``svd()`` for DDRM, DDNM, ΠGDM and DiffPIR.
``DeepinvDenoiser(model, sample_shape)`` wraps a deepinv denoiser ``D(u, sigma)`` as a
``cd.Denoiser`` and ``CDGaussianDenoiser(denoiser)`` a ``cd.Denoiser`` as a deepinv one;
``python -m cd_deepinv.parity`` compares the library's DDRM, DiffPIR and DPS with deepinv's.
"""

from cd_deepinv.denoiser import CDGaussianDenoiser, DeepinvDenoiser
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
from cd_deepinv.spectral import PhysicsSpectralOperator

__all__ = [
    "CDGaussianDenoiser",
    "DeepinvDenoiser",
    "FILTERS",
    "LinearPhysicsConstraint",
    "NonlinearPhysicsConstraint",
    "PhysicsConstraint",
    "PhysicsConstraintConfig",
    "PhysicsSpectralOperator",
    "build_physics",
    "load_physics_constraint",
    "observe",
    "physics_dtype",
    "physics_noise_std",
]
__version__ = "0.1.0"
