"""Data sets that need no download."""

from constrained_diffusion.data.mnist import mnist

__all__ = ["mnist"]
