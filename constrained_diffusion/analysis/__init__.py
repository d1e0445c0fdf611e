"""The Jacobian analysis: J versus J^-1, asymmetry, Newton-direction alignment, Arnoldi spectra."""

from constrained_diffusion.analysis.arnoldi import arnoldi_eigenvalues
from constrained_diffusion.analysis.eigen import direction_alignment, eigenvector_similarity
from constrained_diffusion.analysis.experiment import PAPER_RANDOM, PAPER_SAME, eigvec_rows, real_errors
from constrained_diffusion.analysis.jacobian import (
    antisymmetric_part,
    asymmetry,
    jacobian,
    jvp_matvec,
    symmetric_part,
    vjp_matvec,
)

__all__ = [
    "PAPER_RANDOM", "PAPER_SAME", "antisymmetric_part", "eigvec_rows", "real_errors", "arnoldi_eigenvalues", "asymmetry", "direction_alignment",
    "eigenvector_similarity", "jacobian", "jvp_matvec", "symmetric_part", "vjp_matvec",
]
