"""The sampler engine, its corrections, step-size rules, configuration and result."""

from constrained_diffusion.sampling.adaptive import AdaptiveStop
from constrained_diffusion.sampling.config import SamplerConfig
from constrained_diffusion.sampling.corrections import (
    Correction,
    CorrectionConfig,
    CorrectionResult,
    CorrectionSpec,
    InnerLoop,
    PostStep,
    TimeTravel,
    X0Edit,
    correction_class,
    correction_names,
    get_correction,
    register_correction,
)
from constrained_diffusion.sampling.engine import ConstrainedSampler
from constrained_diffusion.sampling.noise import randn
from constrained_diffusion.sampling.result import SampleResult, StepInfo
from constrained_diffusion.sampling.step import DenoisingStep
from constrained_diffusion.sampling.step_size import StepContext, register_step_size, step_size_names
from constrained_diffusion.sampling.update import ddim_noise_scale, ddim_update

__all__ = [
    "AdaptiveStop", "ConstrainedSampler", "Correction", "CorrectionConfig", "CorrectionResult", "CorrectionSpec",
    "correction_class", "correction_names", "get_correction", "register_correction", "DenoisingStep", "InnerLoop",
    "PostStep", "SampleResult", "SamplerConfig", "StepContext", "StepInfo", "TimeTravel", "X0Edit", "ddim_noise_scale",
    "ddim_update", "randn", "register_step_size", "step_size_names",
]
