"""Data sets that need no download."""

from constrained_diffusion.data.mnist import demo_digits, mnist

__all__ = ["demo_digits", "mnist"]
