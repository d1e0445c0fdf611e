"""Image grids and a dependency-free PNG writer (8-bit grey or RGB)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor


def to_uint8(x: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Map ``value_range`` linearly to ``0..255`` (clamped), as ``uint8``."""
    lo, hi = value_range
    return ((x.detach().float().cpu() - lo) / (hi - lo) * 255.0).round().clamp(0, 255).to(torch.uint8)


def make_grid(images: Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile ``(N, C, H, W)`` images into one ``(C, rows*(H+p)+p, nrow*(W+p)+p)`` image, row-major."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    N, C, H, W = images.shape
    rows = -(-N // nrow)
    grid = torch.full((C, rows * (H + padding) + padding, nrow * (W + padding) + padding), pad_value, dtype=images.dtype)
    for i in range(N):
        r, c = divmod(i, nrow)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        grid[:, top:top + H, left:left + W] = images[i]
    return grid


def save_png(path: str | Path, image: Tensor) -> Path:
    """Write a ``uint8`` image ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)`` as a PNG file."""
    if image.dtype != torch.uint8:
        raise TypeError(f"image must be uint8 (see to_uint8), got {image.dtype}")
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        color_type, pixels = 0, image
    elif image.ndim == 3 and image.shape[0] == 3:
        color_type, pixels = 2, image.permute(1, 2, 0)
    else:
        raise ValueError(f"image must be (H, W), (1, H, W) or (3, H, W), got shape {tuple(image.shape)}")
    H, W = pixels.shape[:2]
    raw = pixels.contiguous().numpy().reshape(H, -1)
    scanlines = b"".join(b"\x00" + row.tobytes() for row in raw)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", W, H, 8, color_type, 0, 0, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b""))
    return path
