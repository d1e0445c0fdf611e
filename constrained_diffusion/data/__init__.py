"""Data sets that need no download, and image sets for evaluation (folders, ``mnist-test``, ``mnist-validation``, ``mnist-held-out``)."""

from constrained_diffusion.data.images import ImageFolder, TensorImages, open_images
from constrained_diffusion.data.mnist import demo_digits, mnist, shipped_test_digits

__all__ = ["ImageFolder", "TensorImages", "demo_digits", "mnist", "open_images", "shipped_test_digits"]
