"""CLIP Gram-matrix style guidance for ``constrained_diffusion`` (entry point ``clip-style``).

Reference: Graikos, Jojic & Samaras, *Fast constrained sampling in pre-trained diffusion
models*, NeurIPS 2025 (style guidance after FreeDoM / MPGD).
"""

from cd_clip_style.style import CLIP_MEAN, CLIP_STD, CLIPStyle, GramScale, Resize, gram_matrix, load_image

__all__ = ["CLIPStyle", "CLIP_MEAN", "CLIP_STD", "GramScale", "Resize", "gram_matrix", "load_image"]
__version__ = "0.1.0"
