"""Segmentation guidance for ``constrained_diffusion`` (entry point ``segmentation``).

Reference: Graikos, Jojic & Samaras, *Fast constrained sampling in pre-trained diffusion
models*, NeurIPS 2025 (training-free guidance by a differentiable loss on ``x0_hat``).
"""

from cd_segmentation.guidance import SegmentationGuidance, import_network, load_label_map
from cd_segmentation.networks import NETWORK_GROUP, load_network, network_names, register_network

__all__ = ["NETWORK_GROUP", "SegmentationGuidance", "import_network", "load_label_map", "load_network", "network_names", "register_network"]
__version__ = "0.1.0"
