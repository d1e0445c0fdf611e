"""Inpainting masks: boxes and free-form brush strokes. Convention: 1 = known, 0 = missing.

`free_form_mask` follows the random-stroke generators of Palette / LaMa (Saharia et al.,
2022; Suvorov et al., 2022): strokes are polylines of random segments drawn with a thick round
brush; strokes are added until the hole covers ``hole_ratio`` of the image (the last stroke is
drawn segment by segment and stops as soon as the ratio is reached, so the result lies within
a brush width of the target).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def box_mask(size: tuple[int, int], top: int, left: int, height: int, width: int) -> Tensor:
    """``(1, 1, H, W)`` mask with the box ``[top:top+height, left:left+width]`` missing."""
    H, W = size
    if not (0 <= top < H and 0 <= left < W and height > 0 and width > 0):
        raise ValueError(f"box (top={top}, left={left}, height={height}, width={width}) is outside the image {size}")
    mask = torch.ones(1, 1, H, W)
    mask[..., top:top + height, left:left + width] = 0
    return mask


def random_box_mask(size: tuple[int, int], area: float = 0.25, generator: torch.Generator | None = None) -> Tensor:
    """A square hole covering ``area`` of the image at a uniformly random position."""
    if not 0 < area <= 1:
        raise ValueError(f"area must lie in (0, 1], got {area}")
    H, W = size
    h, w = max(1, round(H * math.sqrt(area))), max(1, round(W * math.sqrt(area)))
    top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
    return box_mask(size, top, left, h, w)


def _stamp(hole: Tensor, yy: Tensor, xx: Tensor, y: float, x: float, radius: float) -> None:
    hole |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def free_form_mask(size: tuple[int, int], hole_ratio: float = 0.3, generator: torch.Generator | None = None,
                   brush: tuple[float, float] = (0.06, 0.12), max_segments: int = 8) -> Tensor:
    """Random thick brush strokes covering ``hole_ratio`` of the image; ``(1, 1, H, W)``.

    Args:
        size: ``(H, W)``.
        hole_ratio: target fraction of missing pixels, in ``(0, 0.9]``.
        generator: makes the mask reproducible; ``None`` draws from torch's global random state.
        brush: range of the brush radius as a fraction of ``min(H, W)``.
        max_segments: segments per stroke.
    """
    if not 0 < hole_ratio <= 0.9:
        raise ValueError(f"hole_ratio must lie in (0, 0.9], got {hole_ratio}")
    H, W = size
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    hole = torch.zeros(H, W, dtype=torch.bool)
    target = hole_ratio * H * W
    u = lambda: float(torch.rand((), generator=generator))  # noqa: E731
    while hole.sum() < target:
        radius = max(1.0, (brush[0] + (brush[1] - brush[0]) * u()) * min(H, W))
        y, x = u() * H, u() * W
        angle = 2 * math.pi * u()
        for _ in range(1 + int(u() * max_segments)):
            angle += (u() - 0.5) * math.pi  # turn by up to 90 degrees
            length = (0.1 + 0.3 * u()) * min(H, W)
            steps = max(1, int(length / max(0.5, radius / 2)))
            for k in range(1, steps + 1):
                _stamp(hole, yy, xx, y + math.sin(angle) * length * k / steps, x + math.cos(angle) * length * k / steps, radius)
                if hole.sum() >= target:
                    break
            y = min(max(y + math.sin(angle) * length, 0.0), H - 1.0)
            x = min(max(x + math.cos(angle) * length, 0.0), W - 1.0)
            if hole.sum() >= target:
                break
    return (~hole).float()[None, None]


def load_mask_png(path: str) -> Tensor:
    """Read a grey PNG (white = known, black = missing; any bit depth) as a ``(1, 1, H, W)`` mask in ``[0, 1]``."""
    from PIL import Image  # optional dependency (diffusers and matplotlib bring it)

    from constrained_diffusion.utils.images import pil_to_tensor

    with Image.open(path) as img:
        return pil_to_tensor(img, 1, (0.0, 1.0), f"mask {path}")[None]
