"""Small helpers: image grids and PNG files, TF32 emulation, and the resumable JSON-lines store.

The names below load on first access, so the torch-free helpers (``utils.tables``, ``utils.paths``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from constrained_diffusion.utils.images import make_grid, save_png, to_uint8
    from constrained_diffusion.utils.jsonl_store import JsonlStore
    from constrained_diffusion.utils.precision import emulate_tf32, round_to_tf32, tf32_disabled

_WHERE = {"make_grid": "images", "save_png": "images", "to_uint8": "images", "JsonlStore": "jsonl_store",
          "emulate_tf32": "precision", "round_to_tf32": "precision", "tf32_disabled": "precision"}


def __getattr__(name: str) -> Any:
    """Import a public helper on first access."""
    if name not in _WHERE:
        raise AttributeError(f"module 'constrained_diffusion.utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"constrained_diffusion.utils.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["JsonlStore", "emulate_tf32", "make_grid", "round_to_tf32", "save_png", "tf32_disabled", "to_uint8"]
