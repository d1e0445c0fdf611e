"""Image grids, a dependency-free PNG writer (8-bit grey or RGB) and a reader for every PIL mode."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image as PILImage

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
"""PIL modes of 16-bit unsigned single-channel pixels (a 16-bit grey PNG opens as one of these)."""


def pil_to_tensor(img: PILImage, channels: int, value_range: tuple[float, float] = (0.0, 1.0), name: str = "image") -> Tensor:
    """A PIL image of any mode and bit depth as ``(channels, H, W)`` float32 in ``value_range``, scaled by its range.

    Each mode is scaled by the range of its pixel type, not converted through 8 bits first
    (PIL's ``convert("L")`` clips a 16-bit value above 255 to white):

    * 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): ``v / 65535`` at full precision.
    * ``I`` (32-bit int; how older PIL opens a 16-bit grey PNG): ``v / 65535``; a value outside
      ``0 .. 65535`` is an error (its range is unknown).
    * ``F`` (32-bit float): taken as is; a value outside ``[0, 1]`` (or not finite) is an error.
    * 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ...): PIL's conversion to
      ``L`` or ``RGB``, then ``v / 255``. A 16-bit RGB PNG opens as ``RGB`` with each value's
      high byte (PIL has no 48-bit mode): off by at most ``255 / 65535 < 1/255``.
    * with transparency (``LA``, ``RGBA``, ``PA``, ``P`` with a transparent colour, ...):
      composited over white, ``a·c + (1 − a)·1``, rather than the hidden colour of a
      transparent pixel.

    Colour to grey uses PIL's ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``; grey to colour
    repeats the channel. The EXIF orientation of a photograph is applied.

    Args:
        img: the image (not closed here).
        channels: 1 (grey) or 3 (RGB).
        value_range: ``(lo, hi)`` that black and white map to (``(-1, 1)`` for a model's pixels).
        name: how errors name the image.

    Returns:
        ``(channels, H, W)`` float32 in ``value_range``.

    Raises:
        ValueError: ``channels`` other than 1 or 3; an ``I`` or ``F`` image out of range.

    Examples:
        >>> import numpy as np
        >>> from PIL import Image
        >>> grey16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
        >>> grey16.mode, pil_to_tensor(grey16, 1).tolist()
        ('I;16', [[[0.0, 0.5000076293945312, 1.0]]])
        >>> pil_to_tensor(grey16, 3, (-1.0, 1.0)).shape, pil_to_tensor(grey16, 3, (-1.0, 1.0)).max().item()
        (torch.Size([3, 1, 3]), 1.0)
    """
    from PIL import ImageOps

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    lo, hi = (float(v) for v in value_range)
    img = ImageOps.exif_transpose(img) or img
    if img.mode in SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        x = torch.from_numpy(_wide_grey_in_unit_range(img, name) * (hi - lo) + lo).float()[None]
        return x.expand(channels, -1, -1).contiguous()
    return _eight_bit_to_tensor(_composite_over_white(img), channels, lo, hi)


def _wide_grey_in_unit_range(img: PILImage, name: str) -> np.ndarray:
    """The pixels of a 16-bit grey, ``I`` or ``F`` image as ``(H, W)`` float64 in ``[0, 1]``; out of range is an error."""
    import numpy as np

    mode = img.mode
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{name}: cannot read PIL mode {mode!r} with shape {arr.shape}")
    if mode == "F":
        if not np.isfinite(arr).all() or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
            raise ValueError(f"{name}: a float (mode 'F') image must hold values in [0, 1], "
                             f"got [{float(np.nanmin(arr)):g}, {float(np.nanmax(arr)):g}]")
        return arr.astype(np.float64)
    if mode == "I" and (arr.min(initial=0) < 0 or arr.max(initial=0) > 65535):
        raise ValueError(f"{name}: a 32-bit integer (mode 'I') image is read as 16-bit (0 .. 65535), "
                         f"got values in [{int(arr.min())}, {int(arr.max())}]")
    return arr.astype(np.float64) / 65535.0


def _composite_over_white(img: PILImage) -> PILImage:
    """An image that may carry transparency as ``RGBA`` composited over white (``a·c + (1 − a)·1``); any other unchanged."""
    from PIL import Image

    mode = img.mode
    if not ("A" in mode or "a" in mode or (mode in ("P", "L", "RGB") and "transparency" in img.info)):
        return img
    rgba = img.convert("RGBA")
    if rgba.getextrema()[3][0] < 255:  # any pixel not opaque
        rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return rgba


def _eight_bit_to_tensor(img: PILImage, channels: int, lo: float, hi: float) -> Tensor:
    """An 8-bit image converted by PIL to ``L`` or ``RGB``, as ``(channels, H, W)`` float32 ``v / 255`` mapped to ``[lo, hi]``."""
    target = "L" if channels == 1 else "RGB"
    if img.mode != target:
        img = img.convert(target)
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.reshape(img.height, img.width, channels).permute(2, 0, 1).float() / (255.0 / (hi - lo)) + lo


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
    """Write a ``uint8`` image ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)`` as a PNG file, atomically (`safe_io.write_bytes`)."""
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
    from constrained_diffusion.utils.safe_io import write_bytes

    return write_bytes(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines, 9)) + chunk(b"IEND", b""))
