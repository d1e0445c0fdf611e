"""Corrections: how a method edits the trajectory within one denoising step.

Importing this package registers the built-in corrections (each module registers its class).
"""

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionConfig, CorrectionResult, step_sizes

# the methods of the field, one file each (importing registers them)
from constrained_diffusion.sampling.corrections.daps import DAPS, DAPSConfig
from constrained_diffusion.sampling.corrections.ddnm import DDNM, DDNMConfig
from constrained_diffusion.sampling.corrections.ddrm import DDRM, DDRMConfig
from constrained_diffusion.sampling.corrections.diffpir import DiffPIR, DiffPIRConfig
from constrained_diffusion.sampling.corrections.flowchef import FlowChef, FlowChefConfig
from constrained_diffusion.sampling.corrections.inner_loop import InnerLoop, InnerLoopConfig
from constrained_diffusion.sampling.corrections.mmps import MMPS, MMPSConfig
from constrained_diffusion.sampling.corrections.operators import SpectralOperator, svd_of
from constrained_diffusion.sampling.corrections.pigdm import PiGDM, PiGDMConfig
from constrained_diffusion.sampling.corrections.post_step import PostStep, PostStepConfig
from constrained_diffusion.sampling.corrections.red_diff import REDDiff, REDDiffConfig
from constrained_diffusion.sampling.corrections.registry import (
    CorrectionSpec,
    correction_class,
    register_correction,
)
from constrained_diffusion.sampling.corrections.registry import get as get_correction
from constrained_diffusion.sampling.corrections.registry import names as correction_names
from constrained_diffusion.sampling.corrections.registry import parse_config as parse_correction_config
from constrained_diffusion.sampling.corrections.repaint import RePaint, RePaintConfig
from constrained_diffusion.sampling.corrections.time_travel import TimeTravel, TimeTravelConfig
from constrained_diffusion.sampling.corrections.x0_edit import X0Edit

__all__ = [
    "DAPS", "DDNM", "DDRM", "MMPS", "DAPSConfig", "DDNMConfig", "DDRMConfig", "DiffPIR", "DiffPIRConfig", "FlowChef", "FlowChefConfig",
    "MMPSConfig", "PiGDM", "PiGDMConfig", "REDDiff", "REDDiffConfig", "RePaint", "RePaintConfig", "SpectralOperator", "svd_of",
    "Correction", "CorrectionConfig", "CorrectionResult", "CorrectionSpec", "InnerLoop", "InnerLoopConfig", "PostStep", "PostStepConfig",
    "TimeTravel", "TimeTravelConfig", "X0Edit", "correction_class", "correction_names", "get_correction", "parse_correction_config",
    "register_correction", "step_sizes",
]
