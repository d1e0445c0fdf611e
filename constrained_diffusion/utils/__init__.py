"""Small helpers: image grids and PNG files, and TF32 emulation."""

from constrained_diffusion.utils.images import make_grid, save_png, to_uint8
from constrained_diffusion.utils.precision import emulate_tf32, round_to_tf32, tf32_disabled

__all__ = ["emulate_tf32", "make_grid", "round_to_tf32", "save_png", "tf32_disabled", "to_uint8"]
