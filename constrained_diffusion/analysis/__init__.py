"""The Jacobian analysis: J versus J^-1, asymmetry, Newton-direction alignment, Arnoldi spectra."""

from constrained_diffusion.analysis.arnoldi import arnoldi_eigenvalues
from constrained_diffusion.analysis.eigen import direction_alignment, eigenvector_similarity
from constrained_diffusion.analysis.jacobian import (
    antisymmetric_part,
    asymmetry,
    jacobian,
    jvp_matvec,
    symmetric_part,
    vjp_matvec,
)

__all__ = [
    "antisymmetric_part", "arnoldi_eigenvalues", "asymmetry", "direction_alignment",
    "eigenvector_similarity", "jacobian", "jvp_matvec", "symmetric_part", "vjp_matvec",
]
