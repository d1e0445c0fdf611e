"""The sampler engine, its configuration and its result."""

from constrained_diffusion.sampling.config import SamplerConfig
from constrained_diffusion.sampling.engine import ConstrainedSampler, randn
from constrained_diffusion.sampling.result import SampleResult, StepInfo
from constrained_diffusion.sampling.update import ddim_noise_scale, ddim_update

__all__ = ["ConstrainedSampler", "SampleResult", "SamplerConfig", "StepInfo", "ddim_noise_scale", "ddim_update", "randn"]
