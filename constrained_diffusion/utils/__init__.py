"""Small helpers: image grids and PNG files."""

from constrained_diffusion.utils.images import make_grid, save_png, to_uint8

__all__ = ["make_grid", "save_png", "to_uint8"]
