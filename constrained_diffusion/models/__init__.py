"""Networks that ship with the package."""

from constrained_diffusion.models.unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]
