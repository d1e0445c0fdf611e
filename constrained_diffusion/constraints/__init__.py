"""Constraints: the error direction and residual of ``x0_hat``."""

from constrained_diffusion.constraints.base import Constraint, LinearConstraint, NonlinearConstraint
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.latent import DecodedConstraint, EncodedConstraint, latent_inpainting
from constrained_diffusion.constraints.super_resolution import SuperResolution, downsample_matrix

__all__ = ["Constraint", "DecodedConstraint", "EncodedConstraint", "Inpainting", "latent_inpainting", "LinearConstraint", "NonlinearConstraint", "SuperResolution", "downsample_matrix"]
