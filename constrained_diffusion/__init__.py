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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below load on first access (``--help`` must not import torch); listed here for type checkers
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

_WHERE = {
    "constraints": "constrained_diffusion.constraints",
    "denoisers": "constrained_diffusion.denoisers",
    "linalg": "constrained_diffusion.linalg",
    "models": "constrained_diffusion.models",
    "recipes": "constrained_diffusion.recipes",
    "sampling": "constrained_diffusion.sampling",
    "solvers": "constrained_diffusion.solvers",
    "ClassGuidance": "constrained_diffusion.constraints",
    "Composite": "constrained_diffusion.constraints",
    "Constraint": "constrained_diffusion.constraints",
    "DecodedConstraint": "constrained_diffusion.constraints",
    "EncodedConstraint": "constrained_diffusion.constraints",
    "Inpainting": "constrained_diffusion.constraints",
    "LinearConstraint": "constrained_diffusion.constraints",
    "NonlinearConstraint": "constrained_diffusion.constraints",
    "PSLDConstraint": "constrained_diffusion.constraints",
    "SuperResolution": "constrained_diffusion.constraints",
    "latent_inpainting": "constrained_diffusion.constraints",
    "Denoiser": "constrained_diffusion.denoisers",
    "FlowMatchDenoiser": "constrained_diffusion.denoisers",
    "FlowSchedule": "constrained_diffusion.denoisers",
    "FluxDenoiser": "constrained_diffusion.denoisers",
    "GaussianDenoiser": "constrained_diffusion.denoisers",
    "MNISTDenoiser": "constrained_diffusion.denoisers",
    "NetworkDenoiser": "constrained_diffusion.denoisers",
    "NoiseSchedule": "constrained_diffusion.denoisers",
    "SD3Denoiser": "constrained_diffusion.denoisers",
    "StableDiffusionDenoiser": "constrained_diffusion.denoisers",
    "TimeGrid": "constrained_diffusion.denoisers",
    "VAECodec": "constrained_diffusion.denoisers",
    "VPSchedule": "constrained_diffusion.denoisers",
    "AdaptiveStop": "constrained_diffusion.sampling",
    "ConstrainedSampler": "constrained_diffusion.sampling",
    "Correction": "constrained_diffusion.sampling",
    "InnerLoop": "constrained_diffusion.sampling",
    "PostStep": "constrained_diffusion.sampling",
    "SamplerConfig": "constrained_diffusion.sampling",
    "SampleResult": "constrained_diffusion.sampling",
    "StepInfo": "constrained_diffusion.sampling",
    "TimeTravel": "constrained_diffusion.sampling",
    "X0Edit": "constrained_diffusion.sampling",
    "sample": "constrained_diffusion.sampling.unconstrained",
    "ExactJVP": "constrained_diffusion.solvers",
    "ExactNewton": "constrained_diffusion.solvers",
    "GradientDescent": "constrained_diffusion.solvers",
    "IdentityDirection": "constrained_diffusion.solvers",
    "InexactNewton": "constrained_diffusion.solvers",
    "SecantNewton": "constrained_diffusion.solvers",
    "Solver": "constrained_diffusion.solvers",
    "SolverConfig": "constrained_diffusion.solvers",
}
"""The public names and the module each is imported from on first access."""


def __getattr__(name: str) -> Any:
    """Import the public names and packages on first access (``cd.ConstrainedSampler``, ``cd.analysis``, ...).

    Nothing but this file loads with ``import constrained_diffusion``, so the CLI's ``--help`` answers without torch.
    """
    if name in _LAZY:
        value: Any = importlib.import_module(f"constrained_diffusion.{name}")
    elif name in _WHERE:
        module = importlib.import_module(_WHERE[name])
        value = module if _WHERE[name] == f"constrained_diffusion.{name}" else getattr(module, name)
    else:
        raise AttributeError(f"module 'constrained_diffusion' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
