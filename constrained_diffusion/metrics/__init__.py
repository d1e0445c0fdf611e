"""Metrics: Fréchet distance, MNIST sample quality, PSNR/SSIM, peak memory."""

from constrained_diffusion.metrics.frechet import frechet_distance
from constrained_diffusion.metrics.images import psnr, ssim
from constrained_diffusion.metrics.memory import PeakMemory
from constrained_diffusion.metrics.quality import classify, sample_quality

__all__ = ["PeakMemory", "classify", "frechet_distance", "psnr", "sample_quality", "ssim"]
