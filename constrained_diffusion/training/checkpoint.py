"""Atomic, unpickle-free checkpoints of a training run.

A checkpoint is written to a temporary file and renamed over the old one, so a crash while
saving leaves the previous checkpoint intact. It is read with ``torch.load(weights_only=True)``,
which restores tensors, numbers, strings and containers and refuses arbitrary objects.

Checkpoints are not part of the repository: by default a run lives in
``$CONSTRAINED_DIFFUSION_HOME/runs/<name>``, with ``CONSTRAINED_DIFFUSION_HOME`` defaulting to
``~/.cache/constrained_diffusion`` (see `default_run_dir`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

HOME_ENV = "CONSTRAINED_DIFFUSION_HOME"


def runs_home() -> Path:
    """The folder that holds the training runs: ``$CONSTRAINED_DIFFUSION_HOME/runs``.

    ``CONSTRAINED_DIFFUSION_HOME`` defaults to ``~/.cache/constrained_diffusion``, outside any
    checkout, so checkpoints never end up in git.
    """
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "constrained_diffusion"
    return base / "runs"


def default_run_dir(name: str) -> Path:
    """The default run directory of a model, e.g. ``default_run_dir("mnist-ddpm")``."""
    return runs_home() / name


class TrainArgumentError(ValueError):
    """A bad argument to a training function; ``argument`` names the parameter at fault.

    The command line maps ``argument`` to its flag (``init_from`` to ``--init-from``), so the
    error names what to change.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file renamed over the old one).

    Args:
        path: the checkpoint file; its folder is created.
        state: tensors, numbers, strings and containers of them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (``weights_only=True``: no unpickling of code).

    Args:
        path: the checkpoint file.

    Returns:
        The saved state, on the CPU.
    """
    return torch.load(Path(path), map_location="cpu", weights_only=True)


class RunInUseError(RuntimeError):
    """Another live process is training in the same run directory."""


def _alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists."""
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
