"""The Jacobian analysis: J versus J^-1, asymmetry, Newton-direction alignment, Arnoldi spectra."""

from constrained_diffusion.analysis.arnoldi import arnoldi_eigenvalues
from constrained_diffusion.analysis.directions import PixelDirections, directions_grid, pixel_directions
from constrained_diffusion.analysis.eigen import direction_alignment, eigenvector_similarity
from constrained_diffusion.analysis.experiment import PAPER_RANDOM, PAPER_SAME, eigvec_row, eigvec_rows, real_errors
from constrained_diffusion.analysis.jacobian import (
    antisymmetric_part,
    asymmetry,
    jacobian,
    jvp_matvec,
    symmetric_part,
    vjp_matvec,
)

__all__ = [
    "PAPER_RANDOM",
    "PAPER_SAME",
    "PixelDirections",
    "antisymmetric_part",
    "arnoldi_eigenvalues",
    "asymmetry",
    "direction_alignment",
    "directions_grid",
    "eigenvector_similarity",
    "eigvec_row",
    "eigvec_rows",
    "jacobian",
    "jvp_matvec",
    "pixel_directions",
    "real_errors",
    "symmetric_part",
    "vjp_matvec",
]
