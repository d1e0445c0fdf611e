"""Atomic, unpickle-free checkpoints of a training run.

A checkpoint is written to a temporary file and renamed over the old one, so a crash while
saving leaves the previous checkpoint intact. It is read with ``torch.load(weights_only=True)``,
which restores tensors, numbers, strings and containers and refuses arbitrary objects.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (no unpickling of code)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


class RunInUseError(RuntimeError):
    """Another live process is training in the same run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold ``directory/LOCK`` (our pid) while training; a lock left by a dead process is taken over.

    Raises:
        RunInUseError: a live process holds the lock.
    """
    lock = Path(directory) / "LOCK"
    if lock.exists():
        text = lock.read_text().strip()
        pid = int(text) if text.isdigit() else 0
        if pid and pid != os.getpid() and _alive(pid):
            raise RunInUseError(f"{directory} is in use by a running training process (pid {pid})")
    lock.write_text(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
