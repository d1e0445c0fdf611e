"""Denoisers: a model's ``x0`` estimate with its noise schedule."""

from constrained_diffusion.denoisers.base import Codec, Denoiser
from constrained_diffusion.denoisers.flow_match import FlowMatchDenoiser
from constrained_diffusion.denoisers.flux import FluxDenoiser
from constrained_diffusion.denoisers.gaussian import GaussianDenoiser
from constrained_diffusion.denoisers.mnist import MNISTDenoiser
from constrained_diffusion.denoisers.network import NetworkDenoiser, to_x0
from constrained_diffusion.denoisers.schedules import (
    FlowMatchEulerSchedule,
    FlowSchedule,
    NoiseSchedule,
    TimeGrid,
    VPSchedule,
)
from constrained_diffusion.denoisers.sd3 import SD3Denoiser
from constrained_diffusion.denoisers.stable_diffusion import StableDiffusionDenoiser
from constrained_diffusion.denoisers.vae import VAECodec

__all__ = [
    "Codec", "Denoiser", "FlowMatchDenoiser", "FlowMatchEulerSchedule", "FlowSchedule", "FluxDenoiser", "GaussianDenoiser",
    "MNISTDenoiser", "NetworkDenoiser", "NoiseSchedule", "SD3Denoiser", "StableDiffusionDenoiser", "TimeGrid", "VAECodec",
    "VPSchedule", "to_x0",
]
