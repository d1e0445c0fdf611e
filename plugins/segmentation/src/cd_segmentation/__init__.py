"""Segmentation guidance for ``constrained_diffusion`` (entry point ``segmentation``).

Reference: Graikos, Jojic & Samaras, *Fast constrained sampling in pre-trained diffusion
models*, NeurIPS 2025 (training-free guidance by a differentiable loss on ``x0_hat``).
"""

from cd_segmentation.guidance import SegmentationGuidance, import_network, load_label_map

__all__ = ["SegmentationGuidance", "import_network", "load_label_map"]
__version__ = "0.1.0"
