"""Small helpers: image grids and PNG files, TF32 emulation, and the resumable JSON-lines store."""

from constrained_diffusion.utils.images import make_grid, save_png, to_uint8
from constrained_diffusion.utils.jsonl_store import JsonlStore
from constrained_diffusion.utils.precision import emulate_tf32, round_to_tf32, tf32_disabled

__all__ = ["JsonlStore", "emulate_tf32", "make_grid", "round_to_tf32", "save_png", "tf32_disabled", "to_uint8"]
