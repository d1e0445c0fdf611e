"""Reconstruction metrics on images in ``[-1, 1]``: PSNR and SSIM (torchmetrics), per image.

Both map images to ``[0, 1]`` first and use ``data_range = 1``: torchmetrics clamps inputs to
``[0, data_range]``, so passing ``[-1, 1]`` images directly would clip their negative half.
PSNR is unchanged by the map (signal range and error scale together).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    return (x.clamp(-1, 1) + 1) / 2


def psnr(x: Tensor, reference: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in ``[-1, 1]`` (peak-to-peak range 2), shape ``(B,)``."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(_unit(x), _unit(reference), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x: Tensor, reference: Tensor) -> Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5) of images in ``[-1, 1]``, shape ``(B,)``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    out = structural_similarity_index_measure(_unit(x), _unit(reference), data_range=1.0, reduction="none")
    return torch.as_tensor(out).reshape(-1)
