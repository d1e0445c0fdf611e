"""Corrections: how a method edits the trajectory within one denoising step."""

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionConfig, CorrectionResult, step_sizes
from constrained_diffusion.sampling.corrections.inner_loop import InnerLoop, InnerLoopConfig
from constrained_diffusion.sampling.corrections.post_step import PostStep, PostStepConfig
from constrained_diffusion.sampling.corrections.time_travel import TimeTravel, TimeTravelConfig
from constrained_diffusion.sampling.corrections.x0_edit import X0Edit

__all__ = [
    "Correction", "CorrectionConfig", "CorrectionResult", "InnerLoop", "InnerLoopConfig", "PostStep", "PostStepConfig",
    "TimeTravel", "TimeTravelConfig", "X0Edit", "step_sizes",
]
