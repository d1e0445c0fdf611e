"""azula's denoisers as ``constrained_diffusion`` denoisers and back; parity with azula's methods.

``AzulaDenoiser(model, sample_shape)`` runs this library's solvers and recipes on an azula
denoiser (on azula's own clock); ``CDAzulaDenoiser(denoiser)`` runs azula's samplers on this
library's discrete-time models (the shipped MNIST DDPM); ``python -m cd_azula.parity`` compares
DDIM, DPS, ΠGDM, MMPS and RePaint with azula's on one network.
"""

from cd_azula.denoiser import AzulaDenoiser, AzulaSchedule, CDAzulaDenoiser, DiscreteSchedule

__all__ = ["AzulaDenoiser", "AzulaSchedule", "CDAzulaDenoiser", "DiscreteSchedule"]
__version__ = "0.1.0"
