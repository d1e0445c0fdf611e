"""Constraints: the error direction and residual of ``x0_hat``.

Built-in and plugin constraints can be built by name: `load` (``cd.constraints.load``),
`names`; plugins register through the ``constrained_diffusion.constraints`` entry-point
group (see `constrained_diffusion.constraints.registry`).
"""

from constrained_diffusion.constraints import registry
from constrained_diffusion.constraints.base import Constraint, LinearConstraint, NonlinearConstraint
from constrained_diffusion.constraints.class_guidance import ClassGuidance, mnist_class_guidance
from constrained_diffusion.constraints.composite import Composite
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.latent import DecodedConstraint, EncodedConstraint, latent_inpainting
from constrained_diffusion.constraints.psld import PSLDConstraint
from constrained_diffusion.constraints.registry import load, names
from constrained_diffusion.constraints.super_resolution import SuperResolution, downsample_matrix

registry.register("inpainting", Inpainting)
registry.register("super-resolution", SuperResolution)
registry.register("class-guidance", ClassGuidance)
registry.register("mnist-class", mnist_class_guidance)

__all__ = ["ClassGuidance", "Composite", "Constraint", "DecodedConstraint", "EncodedConstraint", "Inpainting", "LinearConstraint",
           "NonlinearConstraint", "PSLDConstraint", "SuperResolution", "downsample_matrix", "latent_inpainting", "load",
           "mnist_class_guidance", "names", "registry"]
