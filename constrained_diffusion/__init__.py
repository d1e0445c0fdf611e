"""Training-free constrained sampling from pre-trained diffusion and flow models.

Implements the inexact-Newton method of Graikos, Jojic & Samaras, *Fast constrained sampling
in pre-trained diffusion models* (NeurIPS 2025), with the gradient-descent (DPS) and exact-JVP
directions as swappable solvers. Compose a `Denoiser`, a `Constraint` and a
`Solver` with `ConstrainedSampler`.
"""

from constrained_diffusion import analysis, constraints, data, evaluation, metrics, models
from constrained_diffusion.constraints import (
    ClassGuidance,
    Constraint,
    Inpainting,
    LinearConstraint,
    NonlinearConstraint,
    PSLDConstraint,
    SuperResolution,
)
from constrained_diffusion.denoisers import (
    Denoiser,
    FlowMatchDenoiser,
    FlowSchedule,
    GaussianDenoiser,
    MNISTDenoiser,
    NetworkDenoiser,
    NoiseSchedule,
    StableDiffusionDenoiser,
    VPSchedule,
)
from constrained_diffusion.sampling import ConstrainedSampler, SampleResult, SamplerConfig, StepInfo
from constrained_diffusion import recipes  # noqa: E402  (needs the sampler)
from constrained_diffusion.solvers import ExactJVP, ExactNewton, GradientDescent, IdentityDirection, InexactNewton, Solver

__version__ = "0.1.0"

__all__ = [
    "ClassGuidance", "ConstrainedSampler", "Constraint", "PSLDConstraint", "constraints", "recipes", "Denoiser", "ExactJVP", "ExactNewton", "FlowMatchDenoiser", "FlowSchedule", "GaussianDenoiser",
    "GradientDescent", "IdentityDirection", "InexactNewton", "Inpainting", "LinearConstraint", "MNISTDenoiser", "NetworkDenoiser",
    "NoiseSchedule", "NonlinearConstraint", "SampleResult", "SamplerConfig", "Solver", "StepInfo",
    "StableDiffusionDenoiser", "SuperResolution", "VPSchedule", "__version__", "analysis", "data", "evaluation", "metrics", "models",
]
