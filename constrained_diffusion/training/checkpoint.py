"""Atomic, unpickle-free checkpoints of a training run.

A checkpoint is written to a temporary file and renamed over the old one, so a crash while
saving leaves the previous checkpoint intact. It is read with ``torch.load(weights_only=True)``,
which restores tensors, numbers, strings and containers and refuses arbitrary objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (no unpickling of code)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
