"""Training-free constrained sampling from pre-trained diffusion and flow models.

Implements the inexact-Newton method of Graikos, Jojic & Samaras, *Fast constrained sampling
in pre-trained diffusion models* (NeurIPS 2025), with the gradient-descent (DPS), exact-JVP,
exact-Newton and identity directions as swappable solvers. Compose a `Denoiser`, a
`Constraint` and a `Solver` with `ConstrainedSampler`; a `Correction` says how a method edits
the trajectory.

The experiment packages (``analysis``, ``benchmarks``, ``data``, ``evaluation``, ``metrics``,
``training``, ``utils``) load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from constrained_diffusion import (
    constraints,
    denoisers,
    linalg,
    models,
    recipes,
    sampling,
    solvers,
)
from constrained_diffusion.constraints import (
    ClassGuidance,
    Composite,
    Constraint,
    DecodedConstraint,
    EncodedConstraint,
    Inpainting,
    LinearConstraint,
    NonlinearConstraint,
    PSLDConstraint,
    SuperResolution,
    latent_inpainting,
)
from constrained_diffusion.denoisers import (
    Denoiser,
    FlowMatchDenoiser,
    FlowSchedule,
    FluxDenoiser,
    GaussianDenoiser,
    MNISTDenoiser,
    NetworkDenoiser,
    NoiseSchedule,
    SD3Denoiser,
    StableDiffusionDenoiser,
    TimeGrid,
    VAECodec,
    VPSchedule,
)
from constrained_diffusion.sampling import (
    AdaptiveStop,
    ConstrainedSampler,
    Correction,
    InnerLoop,
    PostStep,
    SamplerConfig,
    SampleResult,
    StepInfo,
    TimeTravel,
    X0Edit,
)
from constrained_diffusion.sampling.unconstrained import sample
from constrained_diffusion.solvers import (
    ExactJVP,
    ExactNewton,
    GradientDescent,
    IdentityDirection,
    InexactNewton,
    SecantNewton,
    Solver,
    SolverConfig,
)

__version__ = "0.1.0"

_LAZY = ("analysis", "benchmarks", "data", "evaluation", "metrics", "training", "utils")


def __getattr__(name: str) -> Any:
    """Import the experiment packages on first access (``cd.analysis``, ``cd.evaluation``, ...)."""
    if name in _LAZY:
        module = importlib.import_module(f"constrained_diffusion.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'constrained_diffusion' has no attribute {name!r}")


__all__ = [
    "AdaptiveStop", "ClassGuidance", "Composite", "ConstrainedSampler", "Constraint", "Correction", "DecodedConstraint",
    "Denoiser", "EncodedConstraint", "ExactJVP", "ExactNewton", "FlowMatchDenoiser", "FlowSchedule", "FluxDenoiser",
    "GaussianDenoiser", "GradientDescent", "IdentityDirection", "InexactNewton", "InnerLoop", "Inpainting",
    "LinearConstraint", "MNISTDenoiser", "NetworkDenoiser", "NoiseSchedule", "NonlinearConstraint", "PSLDConstraint",
    "PostStep", "SD3Denoiser", "SampleResult", "SamplerConfig", "SecantNewton", "Solver", "SolverConfig", "StableDiffusionDenoiser",
    "StepInfo", "SuperResolution", "TimeGrid", "TimeTravel", "VAECodec", "VPSchedule", "X0Edit", "__version__",
    "analysis", "benchmarks", "constraints", "data", "denoisers", "evaluation", "latent_inpainting", "linalg", "metrics", "models",
    "recipes", "sample", "sampling", "solvers", "training", "utils",
]
