"""Denoisers: a model's ``x0`` estimate with its noise schedule."""

from constrained_diffusion.denoisers.base import Codec, Denoiser
from constrained_diffusion.denoisers.flow_match import FlowMatchDenoiser, FluxDenoiser
from constrained_diffusion.denoisers.gaussian import GaussianDenoiser
from constrained_diffusion.denoisers.mnist import MNISTDenoiser
from constrained_diffusion.denoisers.network import NetworkDenoiser, to_x0
from constrained_diffusion.denoisers.stable_diffusion import StableDiffusionDenoiser
from constrained_diffusion.denoisers.vae import VAECodec
from constrained_diffusion.denoisers.schedules import FlowSchedule, NoiseSchedule, ScheduledDenoiser, VPSchedule

__all__ = [
    "Codec", "Denoiser", "FlowMatchDenoiser", "FlowSchedule", "FluxDenoiser", "GaussianDenoiser", "MNISTDenoiser", "NetworkDenoiser", "NoiseSchedule",
    "ScheduledDenoiser", "StableDiffusionDenoiser", "VAECodec", "VPSchedule", "to_x0",
]
